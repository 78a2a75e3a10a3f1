package engine

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Read-modify-write. A memcached server needs add, replace, cas, incr,
// append and touch: each reads a key's current version and writes a new
// one only if that version is what it expects. Update does the read and
// the write under db.mu, the lock every index writer holds, so no other
// write comes between them; the key's cold record is read (pread) before
// the lock like any write's probe (probeCold), and under the lock only if
// the index changed meanwhile.

// Item describes one version of a key.
type Item struct {
	// Seq is the version's sequence number: unique among the database's
	// writes, larger for later ones, and kept by compaction and recovery.
	// A pair of the base bundle has the base's sequence number (the
	// database's next one when the base was switched to, see BaseInfo):
	// the same for all of them, and older than every write made since.
	Seq uint64
	// Expiry is when the version stops being readable (zero: never).
	Expiry time.Time
	// Base says the version is the base bundle's (the delta holds
	// nothing for the key).
	Base bool
}

// ChangeOp is what an Update writes.
type ChangeOp int

const (
	// Keep writes nothing.
	Keep ChangeOp = iota
	// Set stores Change.Value with Change.Expiry.
	Set
	// Remove deletes the key (nothing is written if it is absent).
	Remove
)

// Change is an UpdateFunc's decision.
type Change struct {
	Op    ChangeOp // what to write: Keep, Set or Remove
	Value []byte   // the value Set stores (copied before Update returns)
	// Expiry (with Set): zero for none. An expiry not after now stores
	// nothing readable: the key is removed instead.
	Expiry time.Time
}

// UpdateFunc decides an Update's write from the key's current version.
// found is false if the key is absent or expired (value is then nil).
// value is a copy owned by the call, valid until it returns. next is the
// sequence number a write made now will have (a memcached server keeps it
// in the value as the item's CAS). fn runs with the database's write lock
// held: it must be quick and must not write to the database.
type UpdateFunc func(value []byte, cur Item, found bool, next uint64) (Change, error)

// Update reads key's current version and writes what fn decides, with no
// other write in between. It returns the sequence number of the version
// it wrote (0 when it wrote nothing) or fn's error, which cancels the
// write. fn may be called more than once (when the log must first free
// segment ids); only the last call's decision is written.
func (db *DB) Update(key []byte, fn UpdateFunc) (uint64, error) {
	key, kb, err := db.normKey(key)
	if err != nil {
		return 0, err
	}
	defer putKeyBuf(kb)
	db.invalidate(key)
	return db.update(key, fn)
}

// update is Update of a canonical key, with no fill invalidation (the
// fill queue's own store uses it).
func (db *DB) update(key []byte, fn UpdateFunc) (uint64, error) {
	seq, err := db.updateOnce(key, fn)
	if errors.Is(err, ErrFull) && db.reclaimIDs(idForPut) {
		seq, err = db.updateOnce(key, fn)
	}
	return seq, err
}

func (db *DB) updateOnce(key []byte, fn UpdateFunc) (uint64, error) {
	if db.opts.ReadOnly {
		return 0, ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return 0, err
	}
	defer db.exit(g)
	if err := db.checkKV(key, nil, db.opts.MaxKeySize); err != nil {
		return 0, err
	}
	h := db.hash(key)
	var pre coldProbe
	if db.coldProbes() {
		pre = db.probeCold(h, key)
	}
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return 0, db.failed
	}
	old, err := db.probeAfterCold(h, key, &pre)
	if err != nil {
		db.mu.Unlock()
		return 0, err
	}
	var (
		value []byte
		cur   Item
		found bool
	)
	if old.found {
		var rec segment.Record
		if value, rec, err = db.copyRecordLocked(old.loc); err != nil {
			db.mu.Unlock()
			return 0, err
		}
		if rec.Expiry == 0 || rec.Expiry > db.now() {
			found = true
			cur.Seq = rec.Seq
			if rec.Expiry != 0 {
				cur.Expiry = time.UnixMilli(rec.Expiry)
			}
		} else {
			value = nil
		}
	} else if db.base.Load() != nil {
		if value, cur, found, err = db.baseCopy(key); err != nil {
			db.mu.Unlock()
			return 0, err
		}
	}
	ch, err := fn(value, cur, found, db.nextSeq)
	if err != nil {
		db.mu.Unlock()
		return 0, err
	}
	var expiry int64
	if ch.Op == Set && !ch.Expiry.IsZero() {
		if expiry = ch.Expiry.UnixMilli(); expiry <= db.now() {
			ch.Op = Remove // stored already expired: nothing to keep
		}
	}
	switch ch.Op {
	case Set:
		if err := db.checkKV(key, ch.Value, db.opts.MaxKeySize); err != nil {
			db.mu.Unlock()
			return 0, err
		}
		return db.writeLocked(segment.KindPut, h, key, ch.Value, expiry, old)
	case Remove:
		if !old.found {
			if db.absentShadowLocked() == 0 && !db.needsMaskLocked(key) {
				db.mu.Unlock()
				return 0, nil
			}
			// The key may be an evicted one that a crash would bring
			// back (evict.go): its tombstone is written, but no version.
			_, err := db.writeLocked(segment.KindDelete, h, key, nil, 0, old)
			return 0, err
		}
		return db.writeLocked(segment.KindDelete, h, key, nil, 0, old)
	case Keep:
		db.mu.Unlock()
		return 0, nil
	}
	db.mu.Unlock()
	return 0, fmt.Errorf("%w: Update: unknown ChangeOp %d", ErrBadOptions, ch.Op)
}

// copyRecordLocked reads the record at loc (the key's entry, just probed)
// and returns a copy of its value. A fault reading the mapping is an ErrIO
// error; db.mu stays held either way.
func (db *DB) copyRecordLocked(loc uint64) (value []byte, rec segment.Record, err error) {
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	r, tail, err := db.recordAt(loc)
	if tail {
		defer db.tailMu.RUnlock()
	}
	if err != nil {
		return nil, rec, err
	}
	value = append(make([]byte, 0, len(r.Value)), r.Value...)
	r.Value, r.Key = nil, nil
	return value, r, nil
}

// AppendItem is AppendValue that also returns the version it read (the
// one implementation of both).
func (db *DB) AppendItem(dst, key []byte) (out []byte, it Item, err error) {
	key, kb, err := db.normKey(key)
	if err != nil {
		return dst, it, err
	}
	defer putKeyBuf(kb)
	g, err := db.enter()
	if err != nil {
		return dst, it, err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	n := len(dst)
	// The copy reads the mapping again (after the decode checked it): a
	// fault there is an error too, and dst is returned unchanged.
	defer func() {
		if err != nil {
			out = dst[:n]
		}
	}()
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	rec, held, err := db.lookup(key)
	if err != nil {
		db.missed(key, err)
		return dst, it, err
	}
	// A fault in the copy skips unhold: a tail lock would stay held. The
	// copy faults only on a mapped record, which holds nothing.
	dst = append(dst, rec.Value...)
	it.Seq, it.Base = rec.Seq, held.base
	if rec.Expiry != 0 {
		it.Expiry = time.UnixMilli(rec.Expiry)
	}
	db.unhold(held)
	return dst, it, nil
}

// Limits are the largest key and value this handle accepts and cache
// mode's disk limit (its Options after defaults; MaxDiskBytes 0: none).
type Limits struct {
	MaxKeySize   int   // the largest key a write accepts
	MaxValueSize int   // the largest value a write accepts
	MaxDiskBytes int64 // cache mode's limit (0: none)
}

// Limits returns the handle's limits.
func (db *DB) Limits() Limits {
	return Limits{MaxKeySize: db.opts.MaxKeySize, MaxValueSize: db.opts.MaxValueSize, MaxDiskBytes: db.opts.MaxDiskBytes}
}
