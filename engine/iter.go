package engine

import (
	"errors"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Iterator walks all live pairs in no particular order. It is safe to use
// while other goroutines write: it visits the index one shard at a time,
// taking a consistent cut of each shard, so every key is visited at most
// once, and each pair it yields is a complete record that was the key's
// value at some moment during the walk (keys written or deleted during the
// walk may or may not be seen). An Iterator is not safe for concurrent use.
type Iterator struct {
	db         *DB
	shard      int
	locs       []uint64
	i          int
	key, value []byte
	err        error
	done       bool
}

// NewIterator returns an iterator positioned before the first pair.
func (db *DB) NewIterator() *Iterator {
	return &Iterator{db: db, shard: -1}
}

// Next advances to the next pair and reports whether there is one. After it
// returns false, check Err.
func (it *Iterator) Next() bool {
	if it.done {
		return false
	}
	g, err := it.db.enter()
	if err != nil {
		return it.stop(err)
	}
	defer it.db.exit(g)
	now := nowMillis()
	for {
		for it.i < len(it.locs) {
			loc := it.locs[it.i]
			it.i++
			r, locked, err := it.db.recordAt(loc)
			if errors.Is(err, errStale) {
				continue
			}
			if err != nil {
				return it.stop(err)
			}
			ok := r.Kind == segment.KindPut && (r.Expiry == 0 || r.Expiry > now)
			if ok {
				it.key = append(it.key[:0], r.Key...)
				it.value = append(it.value[:0], r.Value...)
			}
			if locked {
				it.db.tailMu.RUnlock()
			}
			if ok {
				return true
			}
		}
		it.shard++
		if it.shard >= index.NumShards {
			return it.stop(nil)
		}
		it.locs = it.db.ix.ShardLocations(it.shard, it.locs[:0])
		it.i = 0
	}
}

func (it *Iterator) stop(err error) bool {
	it.done, it.err = true, err
	it.key, it.value = nil, nil
	return false
}

// Key returns the current key. It is valid until the next call to Next.
func (it *Iterator) Key() []byte { return it.key }

// Value returns the current value. It is valid until the next call to Next.
func (it *Iterator) Value() []byte { return it.value }

// Err returns the error that ended the walk, if any.
func (it *Iterator) Err() error { return it.err }

// Close ends the walk early. It is optional after Next returned false.
func (it *Iterator) Close() error {
	if !it.done {
		it.stop(nil)
	}
	return nil
}

// ForEach calls fn for every live pair, stopping at fn's first error. The
// slices are valid only during the call.
func (db *DB) ForEach(fn func(key, value []byte) error) error {
	it := db.NewIterator()
	defer it.Close()
	for it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Err()
}
