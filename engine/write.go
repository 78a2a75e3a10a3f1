package engine

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// checkKV checks a write's key and value against the options' limits,
// which bound new data only. A single Delete is checked against the
// format's key limit instead (maxKey): it writes a tombstone only for a key
// that is present, so a key written under a larger MaxKeySize can still be
// removed after the limit was lowered, and nothing new gets in. (A batch's
// delete writes its tombstone even for an absent key, so batches keep
// MaxKeySize.)
func (db *DB) checkKV(key, value []byte, maxKey int) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > maxKey:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), maxKey)
	case len(value) > db.opts.MaxValueSize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), db.opts.MaxValueSize)
	}
	return nil
}

// expiryFor returns the expiry time of a record written now with ttl.
func (db *DB) expiryFor(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, ErrBadTTL
	}
	return db.now() + max(ttl.Milliseconds(), 1), nil
}

// Put stores value under key, replacing any earlier value.
func (db *DB) Put(key, value []byte) error {
	return db.write(segment.KindPut, key, value, 0)
}

// PutTTL stores value under key for ttl; afterwards the key reads as absent.
// Expiry has millisecond resolution.
func (db *DB) PutTTL(key, value []byte, ttl time.Duration) error {
	exp, err := db.expiryFor(ttl)
	if err != nil {
		return err
	}
	return db.write(segment.KindPut, key, value, exp)
}

// Delete removes key. Deleting an absent key is not an error (and writes
// nothing).
func (db *DB) Delete(key []byte) error {
	return db.write(segment.KindDelete, key, nil, 0)
}

func (db *DB) write(kind segment.Kind, key, value []byte, expiry int64) error {
	key, kb, err := db.normKey(key)
	if err != nil {
		return err
	}
	defer putKeyBuf(kb)
	db.invalidate(key)
	err = db.writeOne(kind, key, value, expiry)
	floor := idForPut
	if kind == segment.KindDelete {
		floor = idForDelete
	}
	if errors.Is(err, ErrFull) && db.reclaimIDs(floor) {
		err = db.writeOne(kind, key, value, expiry)
	}
	return err
}

func (db *DB) writeOne(kind segment.Kind, key, value []byte, expiry int64) error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	maxKey := db.opts.MaxKeySize
	if kind == segment.KindDelete {
		maxKey = segment.MaxKeyLen
	}
	if err := db.checkKV(key, value, maxKey); err != nil {
		return err
	}
	h := db.hash(key)
	// Read the key's old record (from the disk, if cold) before taking
	// db.mu, so that cold updates keep many reads in flight instead of
	// queueing on the mutex; under it, only check that the index did not
	// change meanwhile (probeCold, validateLocked).
	var pre coldProbe
	if db.coldProbes() {
		pre = db.probeCold(h, key)
		if f := db.cold.probeHook.Load(); f != nil {
			(*f)()
		}
	}
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return db.failed
	}
	old, err := db.probeAfterCold(h, key, &pre)
	if err != nil || kind == segment.KindDelete && !old.found && db.absentShadowLocked() == 0 && !db.needsMaskLocked(key) {
		db.mu.Unlock()
		return err // deleting an absent key writes nothing (but see evict.go, base.go)
	}
	_, err = db.writeLocked(kind, h, key, value, expiry, old)
	return err
}

// writeLocked appends key's record (a put of value with expiry, or a
// tombstone) over old, the key's entry that db.mu's holder just probed,
// updates the index and the accounting, and commits: it unlocks db.mu
// (in every case) and returns once the sync mode's promise holds. It
// returns the record's sequence number.
func (db *DB) writeLocked(kind segment.Kind, h uint64, key, value []byte, expiry int64, old entry) (uint64, error) {
	deleting := kind == segment.KindDelete
	if deleting && db.needsMaskLocked(key) {
		// The base may show the key: the delete is a mask (base.go).
		kind, value, expiry = segment.KindPut, nil, maskExpiry
	}
	var shadow uint64
	if kind == segment.KindDelete {
		if old.found {
			shadow = db.shadowOfLocked(old.loc)
		} else {
			shadow = db.absentShadowLocked() // an evicted key's tombstone (evict.go)
		}
		value = tombValue(shadow)
		db.idFloor = idForDelete // a delete may roll into the id reserve
	}
	rec := segment.Record{Kind: kind, Seq: db.nextSeq, Expiry: expiry, Key: key, Value: value}
	size := segment.Size(len(key), len(value), expiry != 0)
	off, err := db.placeLocked(size, 0)
	db.idFloor = idForPut
	if err != nil {
		db.mu.Unlock()
		return 0, err
	}
	loc := segment.Loc(db.active.id, off)
	// A new key enters the index before its record is appended, so that an
	// index error (crafted colliding keys, a full reservation) leaves
	// nothing behind. Until the record lands, readers find the entry's
	// location empty and treat the key as absent, which it still is.
	insert := kind == segment.KindPut && !old.found
	if insert {
		if _, _, _, err := db.ix.Put(h, loc, noMatch); err != nil {
			db.mu.Unlock()
			return 0, fmt.Errorf("marlin: index: %w", err)
		}
	}
	if err := db.putRecordLocked(&rec, size, off); err != nil {
		if insert {
			db.ix.DeleteExact(h, loc)
		}
		db.mu.Unlock()
		return 0, err
	}
	db.nextSeq++
	db.applyLocked(h, kind, old, loc, size, insert, shadow)
	if deleting {
		db.st.deletes.Add(1)
	} else {
		db.st.puts.Add(1)
	}
	db.st.records.Add(1)
	if kind == segment.KindPut {
		db.st.userBytes.Add(int64(len(key) + len(value)))
	} else {
		db.st.userBytes.Add(int64(len(key)))
	}
	return rec.Seq, db.commitLocked(loc, size) // unlocks mu
}

func noMatch(uint64) (bool, bool) { return false, false }

// entry is what probeLocked found for a key.
type entry struct {
	found bool
	loc   uint64
	size  int // aligned record size
}

// probeLocked finds key's index entry (expired or not). A candidate
// location whose record fails its checks is an error unless another
// candidate is the key: writing over a record that cannot be read could
// leave two entries for one key. db.mu must be held, so no other writer
// moves entries meanwhile.
func (db *DB) probeLocked(h uint64, key []byte) (entry, error) {
	var e entry
	var bad error
	e.found = db.ix.Lookup(h, db.matchKey(key, &e, &bad))
	if !e.found && bad != nil {
		return e, bad
	}
	return e, nil
}

// matchKey returns an index match function that reports whether the
// record at a location is key's, filling e's location and size when it
// is and setting *bad to the error of a candidate that cannot be read (a
// stale location is not an error). It reads through the mapping, as
// before the cold read path: a write's cold reads happen in probeCold,
// before db.mu, and callers that ignore the probe's errors (hasKeyLocked)
// must not meet pread errors they would hide.
func (db *DB) matchKey(key []byte, e *entry, bad *error) func(loc uint64) bool {
	return func(loc uint64) bool {
		r, locked, err := db.recordAt(loc)
		if locked {
			defer db.tailMu.RUnlock()
		}
		if err != nil {
			if !errors.Is(err, errStale) {
				*bad = err
			}
			return false
		}
		if !bytes.Equal(r.Key, key) {
			return false
		}
		e.loc, e.size = loc, segment.Size(len(r.Key), len(r.Value), r.Expiry != 0)
		return true
	}
}

// hasKeyLocked reports whether the index holds an entry for key (expired
// or not), treating unreadable candidates as not the key. db.mu must be
// held.
func (db *DB) hasKeyLocked(h uint64, key []byte) bool {
	e, _ := db.probeLocked(h, key)
	return e.found
}

// applyLocked updates the index and the live/dead figures for a record of
// size bytes just appended at loc, superseding old. inserted says a new
// key's entry is already in place. A tombstone is counted by the shadow
// its value records (as replay counts it, from the value), whether or not
// the key was still present. db.mu must be held.
func (db *DB) applyLocked(h uint64, kind segment.Kind, old entry, loc uint64, size int, inserted bool, shadow uint64) {
	id, _ := segment.SplitLoc(loc)
	sf := db.segs[id].Load()
	switch {
	case kind == segment.KindDelete:
		sf.noteTomb(size, shadow)
		if old.found {
			db.ix.DeleteExact(h, old.loc)
		}
	case old.found:
		db.ix.CompareAndSwap(h, old.loc, loc)
		sf.live.Add(int64(size))
	case inserted:
		sf.live.Add(int64(size))
	}
	if old.found {
		oid, _ := segment.SplitLoc(old.loc)
		if osf := db.segs[oid].Load(); osf != nil {
			osf.live.Add(-int64(old.size))
			osf.dead.Add(int64(old.size))
		}
	}
}

// appendLocked appends rec to the active segment's tail, rolling to a new
// segment first if rec (plus reserve more bytes that must land in the same
// segment) does not fit. It returns the record's location and size.
// db.mu must be held.
func (db *DB) appendLocked(rec *segment.Record, reserve int) (uint64, int, error) {
	size := segment.Size(len(rec.Key), len(rec.Value), rec.Expiry != 0)
	off, err := db.placeLocked(size, reserve)
	if err != nil {
		return 0, 0, err
	}
	loc := segment.Loc(db.active.id, off)
	if err := db.putRecordLocked(rec, size, off); err != nil {
		return 0, 0, err
	}
	return loc, size, nil
}

// placeLocked makes room for a record of size bytes (plus reserve more
// that must land in the same segment), rolling or flushing as needed, and
// returns the offset in the active segment where it will be appended.
// Nothing else may be appended before putRecordLocked. db.mu must be held.
func (db *DB) placeLocked(size, reserve int) (int64, error) {
	if reserve == 0 && int64(size)+segment.HeaderSize > db.opts.SegmentSize {
		// A single record larger than a segment of this open's size: a
		// compaction copy, or a tombstone, of a record written under a
		// larger SegmentSize or MaxKeySize (new puts are bounded by the
		// options). It gets a segment of its own, sized to fit it, so that
		// lowering SegmentSize never leaves data that cannot be moved.
		if err := db.rollSizedLocked(segment.HeaderSize + int64(size)); err != nil {
			return 0, err
		}
	} else if err := db.ensureRoomLocked(int64(size + reserve)); err != nil {
		return 0, err
	}
	if db.tail.n.Load() == 0 {
		db.markLocked(int64(size + reserve))
	}
	if int(db.tail.n.Load())+size > len(db.tail.buf) {
		if err := db.flushLocked(); err != nil {
			return 0, err
		}
	}
	return db.tail.start + db.tail.n.Load(), nil
}

// putRecordLocked encodes rec (of size bytes) at off, the offset
// placeLocked returned. db.mu must be held.
func (db *DB) putRecordLocked(rec *segment.Record, size int, off int64) error {
	sf := db.active
	if rec.Expiry != 0 {
		sf.noteExpiry(rec.Expiry)
	}
	if size > len(db.tail.buf) {
		// Larger than the whole buffer: write it straight to the file. The
		// buffer is empty (placeLocked flushed it), so the file ends at off.
		// The tail then starts after the record.
		b := make([]byte, size)
		segment.Encode(b, sf.gen, off, rec)
		db.tailMu.Lock()
		err := db.writeFileLocked(b)
		if err == nil {
			db.tail.start += int64(size)
		}
		db.tailMu.Unlock()
		return err
	}
	n := db.tail.n.Load()
	segment.Encode(db.tail.buf[n:n+int64(size)], sf.gen, off, rec)
	db.tail.n.Store(n + int64(size))
	return nil
}

// markLocked appends a sync mark when the durable size moved since the last
// one, so recovery can tell synced data from a torn tail. It is best-effort
// (skipped when it would not leave room for the next need bytes) and only
// called with an empty tail buffer.
func (db *DB) markLocked(need int64) {
	sf := db.active
	d := sf.durable.Load()
	if d <= sf.marked {
		return
	}
	rec := segment.Record{Kind: segment.KindSyncMark, Value: segment.EncodeSyncMark(d)}
	size := segment.Size(0, len(rec.Value), false)
	if db.tail.start+int64(size)+need > db.opts.SegmentSize {
		return
	}
	segment.Encode(db.tail.buf[:size], sf.gen, db.tail.start, &rec)
	db.tail.n.Store(int64(size))
	sf.dead.Add(int64(size))
	sf.marked = d
}

// ensureRoomLocked rolls to a new segment unless n more bytes fit in the
// active one.
func (db *DB) ensureRoomLocked(n int64) error {
	if n+segment.HeaderSize > db.opts.SegmentSize {
		return ErrBatchTooLarge
	}
	if db.tail.start+db.tail.n.Load()+n <= db.opts.SegmentSize {
		return nil
	}
	return db.rollLocked()
}

// flushLocked writes the tail buffer to the active segment's file and
// empties it. db.mu must be held.
func (db *DB) flushLocked() error {
	n := db.tail.n.Load()
	if n == 0 {
		return nil
	}
	db.tailMu.Lock()
	defer db.tailMu.Unlock()
	if err := db.writeFileLocked(db.tail.buf[:n]); err != nil {
		return err
	}
	db.tail.start += n
	db.tail.n.Store(0)
	return nil
}

// writeFileLocked appends b to the active segment's file. A failed or short
// write fails the handle: the file now ends in an unknown state, which the
// next Open repairs as a torn tail.
func (db *DB) writeFileLocked(b []byte) error {
	sf := db.active
	if _, err := sf.f.Write(b); err != nil {
		// A failed write (a full disk, typically) may have written part of
		// b. Cut the file back to what it was; the bytes stay in the tail
		// buffer and the next flush retries them, so writes work again once
		// space is freed. Only if the cut fails is the file's end unknown,
		// and the handle must fail (the next Open repairs the torn tail).
		err = fmt.Errorf("marlin: write %s: %w", sf.name, err)
		if terr := sf.f.Truncate(sf.flushed.Load()); terr != nil {
			db.failLocked(fmt.Errorf("%w (and cutting back the partial write failed: %v)", err, terr))
			return db.failed
		}
		db.noteFlushError(err)
		return err
	}
	db.st.bytesWritten.Add(int64(len(b)))
	sf.flushed.Add(int64(len(b)))
	return nil
}

// failLocked makes the handle refuse further writes.
func (db *DB) failLocked(err error) {
	if db.failed == nil {
		db.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		db.syncMu.Lock()
		if db.syncErr == nil {
			db.syncErr = db.failed
		}
		db.syncMu.Unlock()
		db.syncCond.Broadcast()
		db.opts.Logger.Error("marlin: db handle failed", "dir", db.dir, "err", err)
	}
}

// syncActiveLocked flushes the tail and fsyncs the active segment while
// holding db.mu (SyncAlways, rolls and Close).
func (db *DB) syncActiveLocked() error {
	if err := db.flushLocked(); err != nil {
		return err
	}
	sf := db.active
	target := sf.flushed.Load()
	if sf.durable.Load() >= target {
		return nil
	}
	if err := sf.f.Sync(); err != nil {
		err = fmt.Errorf("marlin: fsync %s: %w", sf.name, err)
		db.failLocked(err)
		return err
	}
	db.st.syncs.Add(1)
	db.setDurable(sf, target)
	return nil
}

func (db *DB) setDurable(sf *segFile, n int64) {
	db.syncMu.Lock()
	if n > sf.durable.Load() {
		sf.durable.Store(n)
	}
	db.syncMu.Unlock()
	db.syncCond.Broadcast()
}

// commitLocked finishes a write according to the sync mode: it releases
// db.mu and, for SyncGroup, waits for the flusher's fsync to cover the
// record at loc.
func (db *DB) commitLocked(loc uint64, size int) error {
	switch db.opts.Sync {
	case SyncAlways:
		err := db.syncActiveLocked()
		db.mu.Unlock()
		return err
	case SyncGroup:
		id, off := segment.SplitLoc(loc)
		sf := db.segs[id].Load()
		db.mu.Unlock()
		return db.waitDurable(sf, off+int64(size))
	}
	db.mu.Unlock()
	return nil
}

// waitDurable waits until sf is durable up to end.
func (db *DB) waitDurable(sf *segFile, end int64) error {
	// Note the flush failures before kicking the flusher: the flush the
	// kick starts may fail before this goroutine gets syncMu, and a count
	// read after that would wait for a failure that already happened
	// (forever, when no other write comes). Every flush that starts after
	// the record was appended covers it.
	db.syncMu.Lock()
	fails := db.flushFails
	db.syncMu.Unlock()
	select {
	case db.syncKick <- struct{}{}:
	default:
	}
	if waitDurableHook != nil {
		waitDurableHook()
	}
	db.syncMu.Lock()
	defer db.syncMu.Unlock()
	for sf.durable.Load() < end && db.syncErr == nil && db.flushFails == fails {
		db.syncCond.Wait()
	}
	switch {
	case sf.durable.Load() >= end:
		return nil
	case db.syncErr != nil:
		return db.syncErr
	}
	// A flush failed (disk full): the record is not durable now; it stays
	// buffered and may become durable with a later flush.
	return db.flushErr
}

// waitDurableHook, if set (by tests), runs in waitDurable between the kick
// and the wait.
var waitDurableHook func()

// noteFlushError wakes the group-commit waiters with a failed flush's
// error.
func (db *DB) noteFlushError(err error) {
	db.syncMu.Lock()
	db.flushFails++
	db.flushErr = err
	db.syncMu.Unlock()
	db.syncCond.Broadcast()
}

// Sync makes every write that returned before it durable.
func (db *DB) Sync() error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.failed != nil {
		return db.failed
	}
	return db.syncActiveLocked()
}

// flusher is the background goroutine behind SyncGroup (fsync when a writer
// waits), SyncPeriodic (flush and fsync every interval) and SyncNone (flush
// every interval).
func (db *DB) flusher() {
	defer close(db.flushDone)
	var tick <-chan time.Time
	if db.opts.Sync == SyncPeriodic || db.opts.Sync == SyncNone {
		t := time.NewTicker(db.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-db.stopFlush:
			return
		case <-db.syncKick:
			db.groupSync()
		case <-tick:
			if db.opts.Sync == SyncNone {
				db.mu.Lock()
				if db.failed == nil {
					_ = db.flushLocked()
				}
				db.mu.Unlock()
			} else {
				db.groupSync()
			}
		}
	}
}

// groupSync writes out the tail and fsyncs the active segment, holding
// db.mu only for the write so that writers keep appending during the fsync.
//
// Invariant: a segment's file is never closed while an fsync of it is
// pending or in progress. The flusher pins itself in the operation guard
// while it holds db.mu and the segment it picked is published, and unpins
// after the fsync. Compaction retires a segment by unpublishing it under
// db.mu and then waiting in guard.synchronize before closing the file, so
// that wait covers the fsync. Close stops the flusher
// before release closes any file. (Without this, a roll then a compaction
// could close the file first and the fsync would fail with "file already
// closed", failing the handle for good.)
func (db *DB) groupSync() {
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return
	}
	if err := db.flushLocked(); err != nil {
		db.mu.Unlock()
		return
	}
	sf := db.active
	target := sf.flushed.Load()
	// Pinned while sf is still published (under db.mu): a retirement of sf
	// unpublishes it later, under db.mu, and then waits for this pin. The
	// pin is never held while waiting for db.mu, so a synchronize called
	// with db.mu held cannot deadlock with the flusher.
	pin := db.guard.pin()
	db.mu.Unlock()
	if sf.durable.Load() >= target {
		db.guard.exit(pin)
		return
	}
	if groupSyncHook != nil {
		groupSyncHook(sf)
	}
	// A roll that seals sf fsyncs it itself; an fsync racing with it is
	// harmless.
	err := sf.f.Sync()
	db.guard.exit(pin)
	if err != nil {
		db.mu.Lock()
		db.failLocked(fmt.Errorf("marlin: fsync %s: %w", sf.name, err))
		db.mu.Unlock()
		return
	}
	db.st.syncs.Add(1)
	db.setDurable(sf, target)
}

// groupSyncHook, if set (by tests), runs in groupSync between picking the
// segment and its fsync.
var groupSyncHook func(sf *segFile)
