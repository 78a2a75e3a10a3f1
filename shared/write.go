package shared

import (
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Put stores value under key, replacing any earlier value.
func (s *Store) Put(key, value []byte) error {
	return s.put(key, value, 0)
}

// PutTTL stores value under key for ttl; afterwards the key reads as
// absent. A ttl that is not positive is engine.ErrBadTTL.
func (s *Store) PutTTL(key, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return engine.ErrBadTTL
	}
	return s.put(key, value, ttl)
}

// put stores value under key, expiring ttl after the write (0: never).
// The shared data's hash is computed here, before the write lock.
func (s *Store) put(key, value []byte, ttl time.Duration) error {
	if err := s.checkWrite(key, value); err != nil {
		return err
	}
	var hint []knownData
	if data := value[s.prefixLen(value):]; len(data) >= s.opts.MinSize {
		hint = []knownData{{data, hashOf(data)}}
	}
	_, err := s.db.Txn(func(tx *engine.Tx) error {
		c := newChange(s, tx)
		c.known = append(c.known, hint...)
		var e int64
		if ttl > 0 {
			e = c.now + max(ttl.Milliseconds(), 1)
			if e > maxExpiry {
				return ErrBadExpiry
			}
		}
		return c.set(key, value, e)
	})
	return err
}

// Delete removes key. Deleting an absent key is not an error (and writes
// nothing).
func (s *Store) Delete(key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := s.db.Txn(func(tx *engine.Tx) error {
		c := newChange(s, tx)
		_, err := c.remove(key)
		return err
	})
	return err
}

// Update reads key's current version and writes what fn decides, with no
// other write in between, as engine.DB.Update does: fn sees the whole
// value (prefix and shared data; a copy owned by the call), the key
// record's version (engine.Item: its sequence number and expiry) and the
// sequence number the key's record will get if fn writes (next). It
// returns that number (0 when nothing was written) or fn's error, which
// cancels the write. fn runs under the database's write lock, may run
// more than once (engine.DB.Txn), must be quick and must not write to the
// database or the store. A Change.Expiry not after now removes the key.
func (s *Store) Update(key []byte, fn engine.UpdateFunc) (uint64, error) {
	return s.UpdateHint(key, nil, fn)
}

// UpdateHint is Update for a caller that knows the data fn will most
// likely store (after the prefix; a memcached set's data block): its
// hash is computed before the write lock, and used if fn stores equal
// data, so the lock is not held while hashing it. hint is only read, and
// not after UpdateHint returns.
func (s *Store) UpdateHint(key, hint []byte, fn engine.UpdateFunc) (uint64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	var known []knownData
	if len(hint) >= s.opts.MinSize {
		known = []knownData{{hint, hashOf(hint)}}
	}
	wrote := false
	seq, err := s.db.Txn(func(tx *engine.Tx) error {
		wrote = false
		c := newChange(s, tx)
		c.known = append(c.known, known...)
		r, it, found, err := c.readKey(key)
		if err != nil {
			return err
		}
		var value []byte
		if found {
			value, err = c.value(r)
			switch {
			case errors.Is(err, ErrDangling):
				// Damage: the key reads as absent (as Get has it), and a
				// write replaces it (set and remove drop what they can).
				found, it = false, engine.Item{}
			case err != nil:
				return fmt.Errorf("key %q: %w", key, err)
			}
		}
		ch, err := fn(value, it, found, tx.Next())
		if err != nil {
			return err
		}
		var e int64
		if ch.Op == engine.Set && !ch.Expiry.IsZero() {
			if e = ch.Expiry.UnixMilli(); e <= c.now {
				ch.Op = engine.Remove // stored already expired: nothing to keep
			} else if e > maxExpiry {
				return ErrBadExpiry
			}
		}
		switch ch.Op {
		case engine.Keep:
			return nil
		case engine.Remove:
			wrote, err = c.remove(key)
			return err
		case engine.Set:
			if err := s.checkWrite(key, ch.Value); err != nil {
				return err
			}
			wrote = true
			return c.set(key, ch.Value, e)
		}
		return fmt.Errorf("%w: Update: unknown ChangeOp %d", engine.ErrBadOptions, ch.Op)
	})
	if !wrote {
		seq = 0
	}
	return seq, err
}

// checkWrite checks a write's key and value against the store's limits
// (the engine checks its own again).
func (s *Store) checkWrite(key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > s.lim.MaxValueSize {
		return fmt.Errorf("%w: %d bytes, limit %d", engine.ErrValueTooLarge, len(value), s.lim.MaxValueSize)
	}
	return nil
}

// set replaces key's record with one holding value until e (0: never;
// else after c.now), moving the counts of the old and new versions.
func (c *change) set(key, value []byte, e int64) error {
	old, it, found, err := c.readKey(key)
	if err != nil {
		return err
	}
	if found {
		if err := c.unref(old, it); err != nil {
			return err
		}
	}
	r, err := c.ref(value, e)
	if err != nil {
		return err
	}
	if err := c.put(key, r, e); err != nil {
		return err
	}
	return c.finish()
}

// remove deletes key if it is present; it reports whether it wrote.
func (c *change) remove(key []byte) (bool, error) {
	old, it, found, err := c.readKey(key)
	if err != nil || !found {
		return false, err
	}
	if err := c.tx.Delete(key); err != nil {
		return false, err
	}
	if err := c.unref(old, it); err != nil {
		return false, err
	}
	return true, c.finish()
}
