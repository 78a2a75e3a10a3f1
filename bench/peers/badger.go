//go:build peer_badger || peer_all

package peers

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func init() {
	Register(Engine{
		Name:  "badger",
		Short: "defaults, SyncWrites false",
		Config: "badger.DefaultOptions (64 MiB memtables, 256 MiB block cache, values up to 1 MiB " +
			"kept in the LSM tree, bloom filters) with SyncWrites false; one Update transaction per batch",
		Module: "github.com/dgraph-io/badger/v4",
		Open: func(dir string) (Store, error) {
			db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(false).WithLogger(nil))
			if err != nil {
				return nil, err
			}
			return &badgerStore{db: db}, nil
		},
	})
}

type badgerStore struct{ db *badger.DB }

func (s *badgerStore) WriteBatch(keys, vals [][]byte) error {
	return s.db.Update(func(txn *badger.Txn) error {
		for i, k := range keys {
			if err := txn.Set(k, vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *badgerStore) Get(dst, key []byte) ([]byte, bool, error) {
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		found = true
		dst, err = item.ValueCopy(dst)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return dst, false, nil
	}
	return dst, found, err
}

// Settle waits until Badger's compactors have nothing to pick, a second
// running: no level whose adjusted score is 1 or more, and L0 under its
// score of 1 (the rules of Badger's compactor loop).
func (s *badgerStore) Settle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	quiet := 0
	for time.Now().Before(deadline) {
		busy := false
		for _, l := range s.db.Levels() {
			busy = busy || l.Adjusted >= 1 || l.Level == 0 && l.Score >= 1
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

func (s *badgerStore) Close() error { return s.db.Close() }
