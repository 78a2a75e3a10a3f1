package engine

import (
	"bytes"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/segment"
)

func (db *DB) checkKV(key, value []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > db.opts.MaxKeySize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), db.opts.MaxKeySize)
	case len(value) > db.opts.MaxValueSize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), db.opts.MaxValueSize)
	}
	return nil
}

func expiryFor(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, ErrBadTTL
	}
	return nowMillis() + max(ttl.Milliseconds(), 1), nil
}

// Put stores value under key, replacing any earlier value.
func (db *DB) Put(key, value []byte) error {
	return db.write(segment.KindPut, key, value, 0)
}

// PutTTL stores value under key for ttl; afterwards the key reads as absent.
// Expiry has millisecond resolution.
func (db *DB) PutTTL(key, value []byte, ttl time.Duration) error {
	exp, err := expiryFor(ttl)
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
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	if err := db.checkKV(key, value); err != nil {
		return err
	}
	h := db.hash(key)
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return db.failed
	}
	if kind == segment.KindDelete && !db.hasKeyLocked(h, key) {
		db.mu.Unlock()
		return nil
	}
	rec := segment.Record{Kind: kind, Seq: db.nextSeq, Expiry: expiry, Key: key, Value: value}
	loc, size, err := db.appendLocked(&rec, 0)
	if err != nil {
		db.mu.Unlock()
		return err
	}
	db.nextSeq++
	if err := db.indexLocked(h, key, kind, loc, size); err != nil {
		db.failLocked(err)
		db.mu.Unlock()
		return err
	}
	if kind == segment.KindPut {
		db.st.puts.Add(1)
	} else {
		db.st.deletes.Add(1)
	}
	db.st.userBytes.Add(int64(len(key) + len(value)))
	return db.commitLocked(loc, size) // unlocks mu
}

// hasKeyLocked reports whether the index holds an entry for key (expired
// or not). db.mu must be held.
func (db *DB) hasKeyLocked(h uint64, key []byte) bool {
	return db.ix.Lookup(h, func(loc uint64) bool {
		r, locked, err := db.recordAt(loc)
		if locked {
			defer db.tailMu.RUnlock()
		}
		return err == nil && bytes.Equal(r.Key, key)
	})
}

// indexLocked points the index at a freshly appended record (or removes the
// key for a tombstone) and moves the superseded record's bytes from live to
// dead. db.mu must be held.
func (db *DB) indexLocked(h uint64, key []byte, kind segment.Kind, loc uint64, size int) error {
	var oldSize int
	match := func(old uint64) bool {
		r, locked, err := db.recordAt(old)
		if locked {
			defer db.tailMu.RUnlock()
		}
		if err != nil || !bytes.Equal(r.Key, key) {
			return false
		}
		oldSize = segment.Size(len(r.Key), len(r.Value), r.Expiry != 0)
		return true
	}
	id, _ := segment.SplitLoc(loc)
	sf := db.segs[id].Load()
	var old uint64
	var found bool
	if kind == segment.KindDelete {
		old, found = db.ix.Delete(h, match)
		sf.dead.Add(int64(size))
	} else {
		var err error
		old, found, _, err = db.ix.Put(h, loc, func(old uint64) (bool, bool) {
			ok := match(old)
			return ok, ok
		})
		if err != nil {
			return fmt.Errorf("marlin: index: %w", err)
		}
		sf.live.Add(int64(size))
	}
	if found {
		oid, _ := segment.SplitLoc(old)
		if osf := db.segs[oid].Load(); osf != nil {
			osf.live.Add(-int64(oldSize))
			osf.dead.Add(int64(oldSize))
		}
	}
	return nil
}

// appendLocked appends rec to the active segment's tail, rolling to a new
// segment first if rec (plus reserve more bytes that must land in the same
// segment) does not fit. It returns the record's location and size.
// db.mu must be held.
func (db *DB) appendLocked(rec *segment.Record, reserve int) (uint64, int, error) {
	size := segment.Size(len(rec.Key), len(rec.Value), rec.Expiry != 0)
	if err := db.ensureRoomLocked(int64(size + reserve)); err != nil {
		return 0, 0, err
	}
	if db.tail.n.Load() == 0 {
		db.markLocked(int64(size + reserve))
	}
	if int(db.tail.n.Load())+size > len(db.tail.buf) {
		if err := db.flushLocked(); err != nil {
			return 0, 0, err
		}
	}
	sf := db.active
	off := db.tail.start + db.tail.n.Load()
	if size > len(db.tail.buf) {
		// Larger than the whole buffer: write it straight to the file. The
		// buffer is empty (flushed above), so the file ends at off. The
		// tail now starts after the record.
		b := make([]byte, size)
		segment.Encode(b, sf.gen, off, rec)
		if rec.Expiry != 0 {
			sf.noteExpiry(rec.Expiry)
		}
		db.tailMu.Lock()
		err := db.writeFileLocked(b)
		if err == nil {
			db.tail.start += int64(size)
		}
		db.tailMu.Unlock()
		if err != nil {
			return 0, 0, err
		}
		return segment.Loc(sf.id, off), size, nil
	}
	if rec.Expiry != 0 {
		sf.noteExpiry(rec.Expiry)
	}
	n := db.tail.n.Load()
	segment.Encode(db.tail.buf[n:n+int64(size)], sf.gen, off, rec)
	db.tail.n.Store(n + int64(size))
	return segment.Loc(sf.id, off), size, nil
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
		err = fmt.Errorf("marlin: write %s: %w", sf.name, err)
		db.failLocked(err)
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
	select {
	case db.syncKick <- struct{}{}:
	default:
	}
	db.syncMu.Lock()
	defer db.syncMu.Unlock()
	for sf.durable.Load() < end && db.syncErr == nil {
		db.syncCond.Wait()
	}
	if sf.durable.Load() >= end {
		return nil
	}
	return db.syncErr
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
	db.mu.Unlock()
	if sf.durable.Load() >= target {
		return
	}
	// The file stays open while sf is in db.segs; a roll that seals sf
	// fsyncs it itself, and an fsync racing with it is harmless.
	if err := sf.f.Sync(); err != nil {
		db.mu.Lock()
		db.failLocked(fmt.Errorf("marlin: fsync %s: %w", sf.name, err))
		db.mu.Unlock()
		return
	}
	db.st.syncs.Add(1)
	db.setDurable(sf, target)
}
