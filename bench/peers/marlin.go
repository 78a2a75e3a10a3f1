//go:build peer_marlin || peer_all

package peers

import (
	"errors"
	"io"
	"log/slog"

	"github.com/marlinkv/marlin/engine"
)

func init() {
	Register(Engine{
		Name:  "marlin",
		Short: "SyncNone, defaults",
		Config: "default options except Sync: SyncNone (fsync on Sync, segment roll and Close); " +
			"128 MiB segments, index snapshot at Close",
		Module: "github.com/marlinkv/marlin",
		Open: func(dir string) (Store, error) {
			db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				return nil, err
			}
			return &marlinStore{db: db}, nil
		},
	})
}

type marlinStore struct {
	db *engine.DB
	b  engine.Batch
}

func (s *marlinStore) WriteBatch(keys, vals [][]byte) error {
	s.b.Reset()
	for i, k := range keys {
		s.b.Put(k, vals[i])
	}
	return s.db.Write(&s.b)
}

func (s *marlinStore) Get(dst, key []byte) ([]byte, bool, error) {
	v, err := s.db.AppendValue(dst, key)
	if errors.Is(err, engine.ErrNotFound) {
		return dst, false, nil
	}
	return v, err == nil, err
}

func (s *marlinStore) Close() error { return s.db.Close() }
