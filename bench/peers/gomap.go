package peers

import "strings"

// The baseline: a plain Go map, filled by one goroutine and then read
// concurrently (safe without a lock, as nothing writes meanwhile).
func init() {
	Register(Engine{
		Name:     "map",
		Short:    "map[string][]byte",
		Config:   "map[string][]byte, no size hint; keys and values copied in; in memory only",
		Module:   "std",
		InMemory: true,
		Open:     func(string) (Store, error) { return goMap{}, nil },
	})
}

type goMap map[string][]byte

func (m goMap) WriteBatch(keys, vals [][]byte) error {
	for i, k := range keys {
		m[strings.Clone(string(k))] = append([]byte(nil), vals[i]...)
	}
	return nil
}

func (m goMap) Get(dst, key []byte) ([]byte, bool, error) {
	v, ok := m[string(key)]
	return append(dst, v...), ok, nil
}

func (m goMap) Close() error { return nil }
