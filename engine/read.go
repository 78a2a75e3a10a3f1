package engine

import (
	"bytes"
	"errors"

	"github.com/marlinkv/marlin/segment"
)

// errStale marks a location whose segment is gone (only possible for the
// stale locations a lock-free index read may see); it is never returned to
// users.
var errStale = errors.New("marlin: stale location")

// recordAt decodes the record at loc. If tailLocked is true the record's
// bytes are in the tail buffer and the caller must call db.tailMu.RUnlock
// when done with them; otherwise they are in a read-only mapping and stay
// valid while the DB is open.
func (db *DB) recordAt(loc uint64) (r segment.Record, tailLocked bool, err error) {
	id, off := segment.SplitLoc(loc)
	sf := db.segs[id].Load()
	if sf == nil || off < segment.HeaderSize {
		return r, false, errStale
	}
	if fl := sf.flushed.Load(); off < fl {
		r, _, err = segment.Decode(sf.data[off:fl], sf.gen, off, db.lim)
		return r, false, segment.WithFile(err, sf.name)
	}
	db.tailMu.RLock()
	// Under tailMu the tail's start cannot move; re-check which side of it
	// the record is on (a flush may have happened since).
	if fl := sf.flushed.Load(); off < fl {
		db.tailMu.RUnlock()
		r, _, err = segment.Decode(sf.data[off:fl], sf.gen, off, db.lim)
		return r, false, segment.WithFile(err, sf.name)
	}
	rel := off - db.tail.start
	if db.active != sf || rel < 0 || rel >= db.tail.n.Load() {
		db.tailMu.RUnlock()
		return r, false, errStale
	}
	r, _, err = segment.Decode(db.tail.buf[rel:db.tail.n.Load()], sf.gen, off, db.lim)
	if err != nil {
		db.tailMu.RUnlock()
		return r, false, segment.WithFile(err, sf.name)
	}
	return r, true, nil
}

// lookup finds the live record for key. On success the caller must call
// db.tailMu.RUnlock if tailLocked. Expired records count as absent.
func (db *DB) lookup(key []byte) (rec segment.Record, tailLocked bool, err error) {
	var corrupt error
	var badLoc uint64
	h := db.hash(key)
	found := db.ix.Lookup(h, func(loc uint64) bool {
		r, locked, err := db.recordAt(loc)
		if err != nil {
			if !errors.Is(err, errStale) {
				corrupt, badLoc = err, loc // may not even be this key's; decide below
			}
			return false
		}
		if bytes.Equal(r.Key, key) && r.Kind == segment.KindPut {
			rec, tailLocked = r, locked
			return true
		}
		if locked {
			db.tailMu.RUnlock()
		}
		return false
	})
	switch {
	case !found && corrupt != nil && db.ix.Lookup(h, func(l uint64) bool { return l == badLoc }):
		// The unreadable location is a current entry of this key's hash,
		// not a stale slot seen during a concurrent move.
		return rec, false, corrupt
	case !found:
		return rec, false, ErrNotFound
	case rec.Expiry != 0 && rec.Expiry <= db.now():
		if tailLocked {
			db.tailMu.RUnlock()
		}
		return rec, false, ErrNotFound
	}
	return rec, tailLocked, nil
}

// raiseClockFloor makes DB.now return at least ms from now on.
func (db *DB) raiseClockFloor(ms int64) {
	for {
		f := db.clockFloor.Load()
		if ms <= f || db.clockFloor.CompareAndSwap(f, ms) {
			return
		}
	}
}

// now returns the time, in Unix milliseconds, against which expiry is
// judged. It is Options.Clock, but never earlier than a time the DB has
// used before (clockFloor): if the clock steps back, keys that expired stay
// expired instead of coming back until the clock catches up.
func (db *DB) now() int64 {
	ms := db.opts.Clock().UnixMilli()
	if f := db.clockFloor.Load(); ms <= f {
		return f
	}
	db.raiseClockFloor(ms)
	return db.clockFloor.Load()
}

// Get returns a copy of the value stored for key, or ErrNotFound.
func (db *DB) Get(key []byte) ([]byte, error) {
	return db.AppendValue(nil, key)
}

// AppendValue appends the value stored for key to dst and returns the
// extended slice; with a dst of enough capacity it does not allocate. On
// error dst is returned unchanged.
func (db *DB) AppendValue(dst, key []byte) ([]byte, error) {
	g, err := db.enter()
	if err != nil {
		return dst, err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	rec, locked, err := db.lookup(key)
	if err != nil {
		return dst, err
	}
	dst = append(dst, rec.Value...)
	if locked {
		db.tailMu.RUnlock()
	}
	return dst, nil
}

// View calls fn with the value stored for key, without copying it. The
// slice aliases the DB's memory (a read-only mapping or the write buffer):
// it is valid only until fn returns and must not be modified. fn must not
// call methods of db that write. View returns ErrNotFound if the key is
// absent, or fn's error.
func (db *DB) View(key []byte, fn func(value []byte) error) error {
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	rec, locked, err := db.lookup(key)
	if err != nil {
		return err
	}
	if locked {
		defer db.tailMu.RUnlock()
	}
	return fn(rec.Value)
}

// Has reports whether key is present (and not expired).
func (db *DB) Has(key []byte) (bool, error) {
	g, err := db.enter()
	if err != nil {
		return false, err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	_, locked, err := db.lookup(key)
	if locked {
		db.tailMu.RUnlock()
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, err
}
