//go:build peer_bbolt || peer_all

package peers

import (
	"errors"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

var bboltBucket = []byte("bench")

func init() {
	Register(Engine{
		Name:  "bbolt",
		Short: "NoSync, NoFreelistSync, Update per batch",
		Config: "NoSync, NoFreelistSync, hashmap freelist (bbolt's advice for large files), NoStatistics " +
			"(advised for concurrent readers); one Update transaction per batch, one View per get; " +
			"one bucket, default fill percent",
		Module: "go.etcd.io/bbolt",
		Open: func(dir string) (Store, error) {
			db, err := bolt.Open(filepath.Join(dir, "bench.db"), 0o600, &bolt.Options{
				NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoStatistics: true,
			})
			if err != nil {
				return nil, err
			}
			err = db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucketIfNotExists(bboltBucket)
				return err
			})
			if err != nil {
				db.Close()
				return nil, err
			}
			return &bboltStore{db: db}, nil
		},
	})
}

type bboltStore struct{ db *bolt.DB }

func (s *bboltStore) WriteBatch(keys, vals [][]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bboltBucket)
		for i, k := range keys {
			if err := b.Put(k, vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

var errNoBucket = errors.New("bbolt: bucket missing")

func (s *bboltStore) Get(dst, key []byte) ([]byte, bool, error) {
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bboltBucket)
		if b == nil {
			return errNoBucket
		}
		if v := b.Get(key); v != nil {
			found = true
			dst = append(dst, v...) // v is valid only inside the transaction
		}
		return nil
	})
	return dst, found, err
}

// Close syncs (NoSync skipped every commit's fsync) and closes.
func (s *bboltStore) Close() error {
	if err := s.db.Sync(); err != nil {
		s.db.Close()
		return err
	}
	return s.db.Close()
}
