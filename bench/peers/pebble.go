//go:build peer_pebble || peer_all

package peers

import (
	"errors"
	"log"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

func init() {
	Register(Engine{
		Name:  "pebble",
		Short: "1 GiB cache, bloom 10, NoSync",
		Config: "1 GiB block cache, bloom filters of 10 bits/key on every level " +
			"(Pebble's suggested filter for point lookups), newest format; WAL on, batches committed " +
			"with pebble.NoSync; Flush before Close; other options default",
		Module: "github.com/cockroachdb/pebble/v2",
		Open: func(dir string) (Store, error) {
			opts := &pebble.Options{
				CacheSize:          1 << 30,
				FormatMajorVersion: pebble.FormatNewest,
				Logger:             quietPebbleLogger{},
			}
			for i := range opts.Levels {
				opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
			}
			db, err := pebble.Open(dir, opts)
			if err != nil {
				return nil, err
			}
			return &pebbleStore{db: db}, nil
		},
	})
}

type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any)           {}
func (quietPebbleLogger) Errorf(string, ...any)          {}
func (quietPebbleLogger) Fatalf(format string, a ...any) { log.Fatalf(format, a...) }

type pebbleStore struct{ db *pebble.DB }

func (s *pebbleStore) WriteBatch(keys, vals [][]byte) error {
	b := s.db.NewBatch()
	for i, k := range keys {
		if err := b.Set(k, vals[i], nil); err != nil {
			b.Close()
			return err
		}
	}
	return b.Commit(pebble.NoSync) // Commit releases the batch
}

func (s *pebbleStore) Get(dst, key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, err
	}
	dst = append(dst, v...)
	return dst, true, closer.Close()
}

// Settle waits until no flush or compaction runs and none is owed (the
// estimated compaction debt is zero), or for a second of quiet if some
// debt stays without a compaction being picked.
func (s *pebbleStore) Settle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	quiet := 0
	for time.Now().Before(deadline) {
		m := s.db.Metrics()
		busy := m.Compact.NumInProgress > 0 || m.Flush.NumInProgress > 0
		if !busy && m.Compact.EstimatedDebt == 0 {
			return nil
		}
		if busy {
			quiet = 0
		} else if quiet++; quiet >= 10 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil // still busy: measure anyway (the settle time shows it)
}

// Close flushes the memtables so the restart measures an open, not a WAL
// replay, as a clean shutdown should leave it.
func (s *pebbleStore) Close() error {
	if err := s.db.Flush(); err != nil {
		s.db.Close()
		return err
	}
	return s.db.Close()
}
