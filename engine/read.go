package engine

import (
	"bytes"
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// errStale marks a location whose segment is gone (only possible for the
// stale locations a lock-free index read may see); it is never returned to
// users.
var errStale = errors.New("marlin: stale location")

// recordAt decodes the record at loc. If tailLocked is true the record's
// bytes are in the tail buffer and the caller must call db.tailMu.RUnlock
// when done with them, without blocking in between (a flush waits for it,
// holding db.mu); otherwise they are in a read-only mapping and stay valid
// while the DB is open and the caller is inside an operation (db.enter).
// Decoding a mapped record cannot kill the process: a memory fault is
// returned as ErrIO. Reading the returned key or value again later (a
// copy) must itself be guarded with catchFault.
func (db *DB) recordAt(loc uint64) (r segment.Record, tailLocked bool, err error) {
	id, off := segment.SplitLoc(loc)
	sf := db.segs[id].Load()
	if sf == nil || off < segment.HeaderSize {
		return r, false, errStale
	}
	if fl := sf.flushed.Load(); off < fl {
		r, _, err = db.decodeMapped(sf, off, fl)
		return r, false, err
	}
	db.tailMu.RLock()
	// Under tailMu the tail's start cannot move; re-check which side of it
	// the record is on (a flush may have happened since).
	if fl := sf.flushed.Load(); off < fl {
		db.tailMu.RUnlock()
		r, _, err = db.decodeMapped(sf, off, fl)
		return r, false, err
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
// db.unhold(held) when done with it (see readRecord: the record may be in
// the tail, a pread buffer or the mapping). Expired records count as
// absent. A key with no entry is looked up in the base, if any: the
// record is then a put with sequence number 0 whose value lies in the
// base's mapping (held holds nothing and says base).
func (db *DB) lookup(key []byte) (rec segment.Record, held hold, err error) {
	var corrupt error
	var badLoc uint64
	h := db.hash(key)
	found := db.ix.Lookup(h, func(loc uint64) bool {
		r, hd, err := db.readRecord(loc)
		if err != nil {
			if !errors.Is(err, errStale) {
				corrupt, badLoc = err, loc // may not even be this key's; decide below
			}
			return false
		}
		if bytes.Equal(r.Key, key) && r.Kind == segment.KindPut {
			rec, held = r, hd
			return true
		}
		db.unhold(hd)
		return false
	})
	switch {
	case !found && corrupt != nil && db.ix.Lookup(h, func(l uint64) bool { return l == badLoc }):
		// The unreadable location is a current entry of this key's hash,
		// not a stale slot seen during a concurrent move.
		return rec, hold{}, corrupt
	case !found && db.base.Load() != nil:
		// No entry in the delta: the base answers (base.go). An expired
		// entry (below) hides the base's value instead.
		rec, err = db.baseLookup(key)
		if err == nil && db.readBits != nil {
			db.readBits.mark(h)
		}
		return rec, hold{base: true}, err
	case !found:
		return rec, hold{}, ErrNotFound
	case rec.Expiry != 0 && rec.Expiry <= db.now():
		db.unhold(held)
		return rec, hold{}, ErrNotFound
	}
	if db.readBits != nil {
		db.readBits.mark(h)
	}
	return rec, held, nil
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
	out, _, err := db.AppendItem(dst, key)
	return out, err
}

// viewBufs holds the buffers View copies a value of the unflushed tail
// into; buffers larger than viewBufMax are not kept.
var viewBufs = sync.Pool{New: func() any { return new([]byte) }}

const viewBufMax = 64 << 10

// View calls fn with the value stored for key, without copying it when the
// record is in a sealed or flushed segment. The slice is owned by the DB
// and is valid only until fn returns; fn must not modify or retain it.
//
// Where it points: a record in a segment file is read through the
// segment's read-only mapping (no lock is held; the segment cannot be
// unmapped before View returns), or, when it is not in the page cache
// (Options.ReadMode), read with pread into a buffer private to this call
// that goes back to a pool after fn returns. A record still in the unflushed write
// buffer is first copied into a buffer private to this call (the tail
// holds only the newest writes, at most WriteBufferSize bytes), and the
// buffer's lock is released before fn runs: so fn may take as long as it
// likes and may call Get, Has or View (even of the same key) without
// delaying any writer or deadlocking. fn must not call methods of db that
// write or Close.
//
// View returns ErrNotFound if the key is absent, fn's error, or an ErrIO
// error if the mapped value cannot be read (a fault while fn reads it is
// caught too; any other panic in fn is passed on unchanged).
func (db *DB) View(key []byte, fn func(value []byte) error) (err error) {
	key, kb, err := db.normKey(key)
	if err != nil {
		return err
	}
	defer putKeyBuf(kb)
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	rec, held, err := db.lookup(key)
	if err != nil {
		db.missed(key, err)
		return err
	}
	v := rec.Value
	if held.buf != nil {
		// Read with pread into a buffer of this call's: valid until fn
		// returns, then back to the pool.
		defer db.unhold(held)
	}
	if held.tail {
		bp := viewBufs.Get().(*[]byte)
		buf := append((*bp)[:0], v...)
		db.tailMu.RUnlock()
		defer func() {
			if cap(buf) <= viewBufMax {
				*bp = buf[:0]
				viewBufs.Put(bp)
			}
		}()
		v = buf
	}
	return fn(v)
}

// Has reports whether key is present (and not expired).
func (db *DB) Has(key []byte) (bool, error) {
	key, kb, err := db.normKey(key)
	if err != nil {
		return false, err
	}
	defer putKeyBuf(kb)
	g, err := db.enter()
	if err != nil {
		return false, err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	_, held, err := db.lookup(key)
	db.unhold(held)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, err
}

// Expiry returns when key's value stops being readable: the zero Time if
// it never expires, ErrNotFound if it is absent or already expired. Like
// Has, it reads the record's header but copies no value, and does not
// queue a fill.
func (db *DB) Expiry(key []byte) (time.Time, error) {
	key, kb, err := db.normKey(key)
	if err != nil {
		return time.Time{}, err
	}
	defer putKeyBuf(kb)
	g, err := db.enter()
	if err != nil {
		return time.Time{}, err
	}
	defer db.exit(g)
	db.st.gets.Add(1)
	rec, held, err := db.lookup(key)
	if err != nil {
		return time.Time{}, err
	}
	exp := rec.Expiry
	db.unhold(held)
	if exp == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(exp), nil
}
