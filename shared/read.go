package shared

import (
	"errors"
	"fmt"

	"github.com/marlinkv/marlin/engine"
)

// Reads. A key's record is read first; a reference then costs one more
// read, of the shared data's record. The two reads are not atomic: a
// write between them may delete the key's last reference and so the
// data (the key now holds something else). The data read then finds
// nothing and the key is read again; a record once read is never
// changed in place, so data found under a hash is the data the key
// referred to when it was read (the read is linearizable at the key
// read). After readAttempts tries the read is made inside a transaction,
// where nothing can come between.

// readAttempts bounds the lock-free tries of a read.
const readAttempts = 3

// Get returns a copy of the value stored for key, or engine.ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	return s.AppendValue(nil, key)
}

// AppendValue appends the value stored for key to dst and returns the
// extended slice. On error dst is returned unchanged.
func (s *Store) AppendValue(dst, key []byte) ([]byte, error) {
	out, _, err := s.AppendItem(dst, key)
	return out, err
}

// AppendItem is AppendValue that also returns the version it read: the
// key record's (its sequence number and expiry), whether the data is
// inline or shared.
func (s *Store) AppendItem(dst, key []byte) ([]byte, engine.Item, error) {
	if err := checkKey(key); err != nil {
		return dst, engine.Item{}, err
	}
	n := len(dst)
	for range readAttempts {
		out, it, err := s.readOnce(dst, key)
		if !errors.Is(err, errRaced) {
			if err != nil {
				out = dst[:n]
			}
			return out, it, err
		}
	}
	if s.ro {
		// Nothing writes a read-only database: the reference is dangling.
		return dst[:n], engine.Item{}, fmt.Errorf("key %q: %w", key, ErrDangling)
	}
	var it engine.Item
	var value []byte
	_, err := s.db.Txn(func(tx *engine.Tx) error {
		c := newChange(s, tx)
		r, i, found, err := c.readKey(key)
		if err != nil {
			return err
		}
		if !found {
			return engine.ErrNotFound
		}
		it = i
		value, err = c.value(r)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrDangling) {
			err = fmt.Errorf("key %q: %w", key, err)
		}
		return dst[:n], engine.Item{}, err
	}
	return append(dst, value...), it, nil
}

// errRaced: the key's shared data was gone when read (see Reads).
var errRaced = errors.New("shared: value reclaimed during the read")

// readOnce reads key's record into dst and resolves it in place: an
// inline value is moved down over the tag; a reference is replaced by
// its prefix, followed by the shared data.
func (s *Store) readOnce(dst, key []byte) ([]byte, engine.Item, error) {
	n := len(dst)
	out, it, err := s.db.AppendItem(dst, key)
	if err != nil {
		return out, it, err
	}
	r, err := parseKeyRec(out[n:])
	if err != nil {
		return out, it, fmt.Errorf("key %q: %w", key, err)
	}
	if !r.ref {
		copy(out[n:], out[n+1:])
		return out[:len(out)-1], it, nil
	}
	h := r.h
	out = append(out[:n], r.pre...) // r.pre is later in out: copy moves it down
	m := len(out)
	out, err = s.db.AppendValue(out, valueKey(h))
	if errors.Is(err, engine.ErrNotFound) {
		return out[:m], it, errRaced
	}
	return out, it, err
}

// Iterator walks the store's keys (not its internal records) in no
// particular order, with the guarantees of engine.Iterator. A shared
// value is read when Value is called. An Iterator is not safe for
// concurrent use; Close one you do not run to its end.
type Iterator struct {
	s   *Store
	it  *engine.Iterator
	rec keyRec
	err error
}

// NewIterator returns an iterator positioned before the first key.
func (s *Store) NewIterator() *Iterator {
	return &Iterator{s: s, it: s.db.NewIterator()}
}

// Next advances to the next key and reports whether there is one. After
// it returns false, check Err.
func (it *Iterator) Next() bool {
	if it.err != nil {
		return false
	}
	for it.it.Next() {
		if IsReserved(it.it.Key()) {
			continue
		}
		r, err := parseKeyRec(it.it.Value())
		if err != nil {
			it.err = fmt.Errorf("key %q: %w", it.it.Key(), err)
			return false
		}
		it.rec = r
		return true
	}
	return false
}

// Key returns the current key, valid until the next call to Next.
func (it *Iterator) Key() []byte { return it.it.Key() }

// Item returns the current key's version (its record's).
func (it *Iterator) Item() engine.Item { return it.it.Item() }

// Shared reports whether the current key refers to a shared value.
func (it *Iterator) Shared() bool { return it.rec.ref }

// Value returns the current key's value: valid until the next call to
// Next for an inline value; a new copy for a shared one, whose data is
// read now. If the key was overwritten or deleted since Next and its
// data reclaimed, the error wraps engine.ErrNotFound.
func (it *Iterator) Value() ([]byte, error) {
	r := it.rec
	if !r.ref {
		return r.value, nil
	}
	v := append([]byte(nil), r.pre...)
	v, err := it.s.db.AppendValue(v, valueKey(r.h))
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", it.Key(), err)
	}
	return v, nil
}

// Err returns the error that ended the walk, if any.
func (it *Iterator) Err() error {
	if it.err != nil {
		return it.err
	}
	return it.it.Err()
}

// Close releases the iterator.
func (it *Iterator) Close() error { return it.it.Close() }

// ForEach calls fn for every key with its value and version. value is
// valid until fn returns. A key whose data was reclaimed after the walk
// reached it (it was overwritten or deleted meanwhile) is skipped, as
// engine.Iterator may skip a key written during the walk.
func (s *Store) ForEach(fn func(key, value []byte, it engine.Item) error) error {
	it := s.NewIterator()
	defer it.Close()
	for it.Next() {
		v, err := it.Value()
		if errors.Is(err, engine.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(it.Key(), v, it.Item()); err != nil {
			return err
		}
	}
	return it.Err()
}
