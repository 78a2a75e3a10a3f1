package engine

import (
	"fmt"
	"sort"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Compaction reclaims the space of superseded records.
//
// A pass rewrites sealed segments whose dead share passed a threshold,
// oldest first. Each live record is re-appended at the head of the log
// through the ordinary write path, under db.mu, with a fresh sequence
// number, and the index entry is switched to the copy with
// CompareAndSwap. Holding db.mu per chunk of records means no overwrite or
// delete can interleave with the liveness check and the switch, and the
// fresh sequence number keeps an invariant recovery and compaction both
// rely on:
//
//	every record in a segment of generation g has a higher sequence
//	number than every record in any segment of generation < g.
//
// From it follow the rules for records that are not copied:
//   - A superseded put is dropped: a newer record of its key (a put or a
//     tombstone) exists in a newer segment.
//   - A tombstone is dropped when its segment is the oldest one (nothing
//     older can be resurrected) or when the key is live again (a newer put
//     exists); otherwise it is re-appended.
//   - An expired put is dropped; if it was the key's newest record and its
//     segment is not the oldest, a tombstone replaces it, or else an older
//     version of the key would come back at the next restart.
//
// The old segment is removed only after the copies are fsynced (so its data
// is never the only durable copy being deleted), after it left db.segs (so
// no new reader finds it), and after a grace period (so no reader still
// holds its mapping). Its id is reused only once the removal is durable.
// If the process dies midway, the copies and the old records coexist on
// disk; the copies have higher sequence numbers and win at recovery.

// Compact runs a full compaction pass now: the active segment is sealed if
// it holds dead bytes, then every sealed segment with dead bytes is
// rewritten, oldest first, without the rate limit.
func (db *DB) Compact() error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	if err := db.startBg(); err != nil {
		return err
	}
	defer db.bg.Done()
	return db.compactPass(0, 0, true)
}

// compactor is the background worker: it runs a rate-limited pass over the
// segments past the threshold every few seconds, or when a roll kicks it.
func (db *DB) compactor() {
	defer db.bg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-db.stopBg:
			return
		case <-t.C:
		case <-db.compactKick:
		}
		if err := db.compactPass(db.opts.CompactionThreshold, db.opts.CompactionRate, false); err != nil && err != ErrClosed {
			db.opts.Logger.Error("marlin: compaction failed", "dir", db.dir, "err", err)
		}
	}
}

func (db *DB) kickCompactor() {
	select {
	case db.compactKick <- struct{}{}:
	default:
	}
}

// compactPass rewrites the sealed segments whose dead share is at least
// threshold (and above zero). rate limits the bytes read per second (0: no
// limit). sealActive seals the active segment first if it has dead bytes.
func (db *DB) compactPass(threshold float64, rate int64, sealActive bool) error {
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return db.failed
	}
	if sealActive && db.active.dead.Load() > 0 {
		if err := db.rollLocked(); err != nil {
			db.mu.Unlock()
			return err
		}
	}
	var todo []*segFile
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil || sf == db.active {
			continue
		}
		records := float64(sf.flushed.Load() - segment.HeaderSize)
		if d := float64(sf.dead.Load()); d > 0 && d >= threshold*records {
			todo = append(todo, sf)
		}
	}
	db.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].gen < todo[j].gen })
	for _, sf := range todo {
		if db.stopping() {
			return ErrClosed
		}
		if err := db.compactSegment(sf, rate); err != nil {
			return err
		}
	}
	if len(todo) == 0 {
		return nil
	}
	db.st.compactions.Add(1)
	db.mu.Lock()
	db.snapValid = false // the last snapshot names removed segments
	db.mu.Unlock()
	if db.opts.DisableSnapshots {
		return nil
	}
	return db.snapshotLocked(db.stopBg)
}

// compactChunk is how many record bytes are handled per hold of db.mu.
const compactChunk = 64 << 10

// compactSegment moves the live records of sealed segment sf to the head
// of the log and removes sf.
func (db *DB) compactSegment(sf *segFile, rate int64) error {
	db.mu.Lock()
	// A segment being retired may still have its file (and its old
	// records) on disk, so while any is, no segment counts as the oldest.
	oldest := true
	for i := range db.segs {
		if o := db.segs[i].Load(); o != nil && o.gen < sf.gen || db.retiring[i] {
			oldest = false
		}
	}
	db.mu.Unlock()

	end := sf.flushed.Load()
	start := time.Now()
	var entries []segment.Entry
	for off := int64(segment.HeaderSize); off < end; {
		entries = entries[:0]
		chunkEnd := off + compactChunk
		for off < end && off < chunkEnd {
			r, size, err := db.decodeMapped(sf, off, end) // a read fault is an error, not a crash
			if err != nil {
				return fmt.Errorf("marlin: compaction: %w", err)
			}
			entries = append(entries, segment.Entry{Off: off, Size: size, Rec: r})
			off += int64(size)
		}
		db.mu.Lock()
		err := db.failed
		now := db.now()
		for i := 0; err == nil && i < len(entries); i++ {
			err = db.compactRecordLocked(sf, &entries[i], oldest, now)
		}
		db.mu.Unlock()
		if err != nil {
			return err
		}
		if db.stopping() {
			return ErrClosed
		}
		if rate > 0 {
			// Sleep until the bytes read so far are within the budget.
			due := time.Duration(float64(off-segment.HeaderSize) / float64(rate) * float64(time.Second))
			if d := due - time.Since(start); d > 0 {
				select {
				case <-time.After(d):
				case <-db.stopBg:
					return ErrClosed
				}
			}
		}
	}
	return db.retireSegment(sf)
}

// compactRecordLocked decides the fate of one record of a segment being
// compacted (see the rules above). db.mu must be held.
func (db *DB) compactRecordLocked(sf *segFile, e *segment.Entry, oldest bool, now int64) error {
	r := &e.Rec
	if r.Kind != segment.KindPut && r.Kind != segment.KindDelete {
		return nil // batch commits and sync marks are not needed any more
	}
	loc := segment.Loc(sf.id, e.Off)
	h := db.hash(r.Key)
	if r.Kind == segment.KindDelete {
		if oldest || db.hasKeyLocked(h, r.Key) {
			return nil
		}
		return db.reappendLocked(segment.KindDelete, h, r.Key, nil, 0, 0)
	}
	live := db.ix.Lookup(h, func(l uint64) bool { return l == loc })
	expired := r.Expiry != 0 && r.Expiry <= now
	switch {
	case live && !expired:
		return db.reappendLocked(segment.KindPut, h, r.Key, r.Value, r.Expiry, loc)
	case live: // expired but still indexed
		if db.ix.DeleteExact(h, loc) {
			sf.live.Add(-int64(e.Size))
			sf.dead.Add(int64(e.Size))
		}
		fallthrough
	case expired:
		if !oldest && !db.hasKeyLocked(h, r.Key) {
			return db.reappendLocked(segment.KindDelete, h, r.Key, nil, 0, 0)
		}
	}
	return nil
}

// reappendLocked appends a copy of a record with a fresh sequence number.
// For a put it switches the index entry from oldLoc to the copy.
func (db *DB) reappendLocked(kind segment.Kind, h uint64, key, value []byte, expiry int64, oldLoc uint64) error {
	rec := segment.Record{Kind: kind, Seq: db.nextSeq, Expiry: expiry, Key: key, Value: value}
	loc, size, err := db.appendLocked(&rec, 0)
	if err != nil {
		return err
	}
	db.nextSeq++
	db.st.bytesRewritten.Add(int64(size))
	id, _ := segment.SplitLoc(loc)
	nsf := db.segs[id].Load()
	if kind == segment.KindDelete {
		nsf.dead.Add(int64(size))
		return nil
	}
	if !db.ix.CompareAndSwap(h, oldLoc, loc) {
		// Impossible while db.mu is held; keep the books right anyway.
		nsf.dead.Add(int64(size))
		return nil
	}
	oid, _ := segment.SplitLoc(oldLoc)
	osf := db.segs[oid].Load()
	osize := int64(segment.Size(len(key), len(value), expiry != 0))
	osf.live.Add(-osize)
	osf.dead.Add(osize)
	nsf.live.Add(int64(size))
	return nil
}

// retireSegment removes a compacted segment: fsync the copies, unpublish
// the segment, wait out its readers, then delete the file.
func (db *DB) retireSegment(sf *segFile) error {
	db.mu.Lock()
	if err := db.syncActiveLocked(); err != nil {
		db.mu.Unlock()
		return err
	}
	if n := sf.live.Load(); n != 0 {
		db.mu.Unlock()
		return fmt.Errorf("marlin: compaction of %s left %d live bytes", sf.name, n)
	}
	db.segs[sf.id].Store(nil)
	db.retiring[sf.id] = true
	db.mu.Unlock()

	db.guard.synchronize() // no reader holds sf's mapping after this
	size := sf.flushed.Load()
	cerr := sf.close()
	err := db.fs.Remove(sf.name)
	if err == nil {
		err = db.fs.SyncDir(db.dir)
	}
	if err != nil {
		// The id stays retired: the file may still be there after a crash,
		// and two files must never claim one id. Its records are all older
		// than their copies, so leaving it is harmless.
		return fmt.Errorf("marlin: remove %s: %w", sf.name, err)
	}
	db.mu.Lock()
	db.retiring[sf.id] = false
	db.mu.Unlock()
	db.st.segmentsRemoved.Add(1)
	db.st.bytesReclaimed.Add(size)
	if cerr != nil {
		db.opts.Logger.Warn("marlin: closing a removed segment", "file", sf.name, "err", cerr)
	}
	return nil
}
