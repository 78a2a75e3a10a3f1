package server

import (
	"errors"
	"fmt"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/shared"
)

// backend is what the server asks of its database: the engine itself, or,
// with Config.SharedValues, a shared.Store over it, which stores
// identical item data once (the item header in front of it stays with
// each key). Both give the same answers; the version (engine.Item) an
// item carries is its key record's in both, so CAS values, flush_all
// thresholds and the sweep work unchanged.
type backend interface {
	AppendItem(dst, key []byte) ([]byte, engine.Item, error)
	Get(key []byte) ([]byte, error)
	Update(key []byte, fn engine.UpdateFunc) (uint64, error)
	// UpdateHint is Update for a write whose item data is likely hint
	// (a set's data block): a shared store hashes it before the write
	// lock. The engine ignores it.
	UpdateHint(key, hint []byte, fn engine.UpdateFunc) (uint64, error)
	NewIterator() keyIterator
	// Stats are the engine's figures, with Keys the items' keys only
	// (a shared store's own records are not items).
	Stats() (engine.Stats, error)
	Limits() engine.Limits
	Dir() string
}

// keyIterator walks the items' keys (the sweep).
type keyIterator interface {
	Next() bool
	Key() []byte
	Item() engine.Item
	Err() error
	Close() error
}

// engineStore serves the engine's records as items.
type engineStore struct{ *engine.DB }

func (e engineStore) NewIterator() keyIterator { return e.DB.NewIterator() }

func (e engineStore) UpdateHint(key, _ []byte, fn engine.UpdateFunc) (uint64, error) {
	return e.Update(key, fn)
}

// sharedStore serves a shared.Store's keys as items.
type sharedStore struct{ *shared.Store }

func (s sharedStore) NewIterator() keyIterator { return s.Store.NewIterator() }

func (s sharedStore) Dir() string { return s.DB().Dir() }

func (s sharedStore) Stats() (engine.Stats, error) {
	st, err := s.DB().Stats()
	if err != nil {
		return st, err
	}
	sh, err := s.Store.Stats()
	st.Keys = sh.Keys
	return st, err
}

// A key a client names that begins with shared.Reserved is none of its
// items: reads miss; writes fail (the store refuses them).
func (s sharedStore) AppendItem(dst, key []byte) ([]byte, engine.Item, error) {
	if shared.IsReserved(key) {
		return dst, engine.Item{}, engine.ErrNotFound
	}
	return s.Store.AppendItem(dst, key)
}

func (s sharedStore) Get(key []byte) ([]byte, error) {
	v, _, err := s.AppendItem(nil, key)
	return v, err
}

// openBackend returns what a server of db reads and writes through.
func openBackend(db *engine.DB, cfg *Config) (backend, error) {
	if !cfg.SharedValues {
		if db.Options().KeyNormalizer != nil {
			return engineStore{db}, nil // it would rewrite the store's key (and shared.Open refuses it)
		}
		ok, err := shared.Formatted(db)
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, errors.New("server: the database holds shared values: serve it with shared values on (--shared-values)")
		}
		return engineStore{db}, nil
	}
	st, err := shared.Open(db, shared.Options{Prefix: itemPrefix})
	if err != nil {
		return nil, fmt.Errorf("server: shared values: %w", err)
	}
	return sharedStore{st}, nil
}

// itemPrefix is the part of a stored item that belongs to its key: the
// header (flags, CAS, bits, access time), never shared. A value that is
// not an item (the flush state) is all prefix, kept inline.
func itemPrefix(v []byte) int {
	_, data, err := parseItem(v)
	if err != nil {
		return len(v)
	}
	return len(v) - len(data)
}

// sharedStatLines appends the shared values' "stats" lines (none without
// them): values stored once, the keys that refer to them, and the bytes
// that saves.
func (s *Server) sharedStatLines(stat func(name string, v int64)) {
	ss, ok := s.db.(sharedStore)
	if !ok {
		return
	}
	st, err := ss.Store.Stats()
	if err != nil {
		s.log.Warn("marlin serve: shared values stats", "err", err)
		return
	}
	stat("shared_values", st.Values)
	stat("shared_refs", st.Refs)
	stat("shared_stored_bytes", st.StoredBytes)
	stat("shared_bytes_saved", st.BytesSaved)
}
