package bundle

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	farm "github.com/dgryski/go-farm"
	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// pair is a test input pair.
type pair struct{ k, v string }

// genPairs returns n pairs with distinct keys: key lengths 1 to maxKey
// (with a unique prefix), values 0 to maxValue bytes, from seed.
func genPairs(seed uint64, n, maxKey, maxValue int) []pair {
	rnd := rand.New(rand.NewPCG(seed, 1))
	out := make([]pair, n)
	for i := range out {
		k := fmt.Appendf(nil, "%d/", i)
		for len(k) < 1+rnd.IntN(max(maxKey, 1)) {
			k = append(k, byte(rnd.Uint32()))
		}
		v := make([]byte, rnd.IntN(maxValue+1))
		for j := range v {
			v[j] = byte(rnd.Uint32())
		}
		out[i] = pair{string(k), string(v)}
	}
	return out
}

// model returns the pairs as a map (the last value of a key wins).
func model(pairs []pair) map[string]string {
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		m[p.k] = p.v
	}
	return m
}

// build writes a bundle of pairs, in order, to path on fs.
func build(t testing.TB, fs vfs.FS, path string, o *BuildOptions, pairs []pair) BuildStats {
	t.Helper()
	b, err := NewBuilder(fs, path, o)
	require.NoError(t, err)
	for _, p := range pairs {
		require.NoError(t, b.Add([]byte(p.k), []byte(p.v)))
	}
	require.NoError(t, b.Finish())
	return b.Stats()
}

// open opens path on fs and closes it at the end of the test.
func open(t testing.TB, fs vfs.FS, path string) *Reader {
	t.Helper()
	r, err := Open(fs, path, &OpenOptions{VerifyEntries: true})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// checkModel checks that r holds exactly m: every key reads back its value
// (Get, AppendValue, Has), ForEach yields each pair once, Verify passes,
// and keys that are not in m are absent (exact mode).
func checkModel(t testing.TB, r *Reader, m map[string]string) {
	t.Helper()
	require.Equal(t, len(m), r.Len())
	require.NoError(t, r.Verify())
	for k, v := range m {
		got, err := r.Get([]byte(k))
		require.NoError(t, err, "key %q", k)
		require.Equal(t, v, string(got), "key %q", k)
		app, err := r.AppendValue([]byte("x"), []byte(k))
		require.NoError(t, err)
		require.Equal(t, "x"+v, string(app))
		ok, err := r.Has([]byte(k))
		require.NoError(t, err)
		require.True(t, ok)
	}
	if !r.Approximate() {
		seen := make(map[string]bool, len(m))
		require.NoError(t, r.ForEach(func(k, v []byte) error {
			require.False(t, seen[string(k)], "key %q twice", k)
			seen[string(k)] = true
			want, ok := m[string(k)]
			require.True(t, ok, "key %q not added", k)
			require.Equal(t, want, string(v))
			return nil
		}))
		require.Len(t, seen, len(m))
		for i := range 200 {
			k := fmt.Appendf(nil, "absent-%d", i)
			if _, in := m[string(k)]; in {
				continue
			}
			_, err := r.Get(k)
			require.ErrorIs(t, err, ErrNotFound)
			ok, err := r.Has(k)
			require.NoError(t, err)
			require.False(t, ok)
		}
	}
}

// withHash replaces the key hash for the test (not parallel-safe: tests
// that use it do not run in parallel).
func withHash(t testing.TB, fn func(key []byte, seed uint64) uint64) {
	old := hashKey
	hashKey = fn
	t.Cleanup(func() { hashKey = old })
}

// topBits is a hash keeping only the top bits of FarmHash: many keys share
// each value.
func topBits(bits uint) func([]byte, uint64) uint64 {
	return func(k []byte, seed uint64) uint64 {
		return farm.Hash64WithSeed(k, seed) >> (64 - bits) << (64 - bits)
	}
}

// readFile returns the bytes of name on fs.
func readFile(t testing.TB, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	require.NoError(t, err)
	defer f.Close()
	size, err := f.Size()
	require.NoError(t, err)
	b := make([]byte, size)
	_, err = f.ReadAt(b, 0)
	require.NoError(t, err)
	return b
}

// writeFile replaces name on fs with b.
func writeFile(t testing.TB, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.Create(name)
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// isDamage reports whether err is what a damaged file may give.
func isDamage(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrIO)
}
