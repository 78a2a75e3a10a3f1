package engine

import (
	"errors"
	"math"
	"sort"
	"time"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
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
//   - A tombstone is dropped when nothing older can come back: no segment
//     other than its own, of a generation up to the one it shadows, exists
//     (tombstone.go; retired segments whose files are still on disk count),
//     or the key is live again (a newer put exists). Otherwise it is
//     re-appended, keeping what it shadows, and counts as needed ("tomb")
//     bytes in its new segment, never as dead: a segment of needed
//     tombstones does not qualify for compaction until what they shadow is
//     gone, so a tombstone is copied a bounded number of times.
//   - An expired put is dropped; if it was the key's newest record and an
//     older segment exists, a tombstone shadowing the compacted segment
//     replaces it, or else an older version of the key would come back at
//     the next restart.
//
// A compacted segment leaves db.segs (no new reader finds it) only after
// the copies are fsynced, but its file is deleted only after a snapshot
// that does not list it is durable: a segment is never removed while a
// snapshot that needs it is still the newest (issue 9, item 1). Until then
// it waits in db.awaiting with its id retiring; snapshotLocked deletes the
// files, fsyncs the directory and frees the ids. If the process dies
// midway, the copies and the old records coexist on disk; the copies have
// higher sequence numbers and win at recovery, and Open removes files the
// loaded snapshot does not list. A failed or interrupted pass therefore
// leaves a directory that opens and reads as before.
//
// A record that does not decode is never fatal to a pass: its segment is
// skipped (logged with the file and offset, counted in
// Stats.CompactionSkippedBytes) and remembered as damaged until reopen, so
// later passes do not retry it; its bytes stay for reads, Verify and
// salvage. The other segments are compacted as usual.

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
// segments past the threshold every few seconds, or when a roll kicks it,
// after cache mode's eviction pass (evict.go) if the database is over
// MaxDiskBytes.
func (db *DB) compactor() {
	defer db.bg.Done()
	t := time.NewTicker(db.opts.CompactionInterval)
	defer t.Stop()
	for {
		select {
		case <-db.stopBg:
			return
		case <-t.C:
		case <-db.compactKick:
		}
		if db.opts.manualEvict {
			// Tests drive eviction (evictPass).
		} else if err := db.evictPass(); err != nil && err != ErrClosed {
			db.opts.Logger.Error("marlin: eviction failed", "dir", db.dir, "err", err)
		}
		if db.opts.CompactionThreshold < 0 {
			continue // only cache mode's eviction runs in the background
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

// compactPass rewrites the sealed segments whose reclaimable share is at
// least threshold (and above zero). rate limits the bytes read per second
// (0: no limit). explicit (Compact) seals the active segment first if it
// has reclaimable bytes, and writes the snapshot that lets the retired
// files go at the end.
func (db *DB) compactPass(threshold float64, rate int64, explicit bool) error {
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	rounds := 1
	if explicit {
		// Deleting the retired files can make tombstones droppable: a
		// second round reclaims them (only them: everything else was
		// just rewritten).
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		retired, err := db.compactRound(threshold, rate, explicit, round > 0, 0)
		if err != nil {
			return err
		}
		if retired == 0 && round > 0 {
			break
		}
		db.mu.Lock()
		due := len(db.awaiting) > 0 && (explicit || db.retiredDueLocked() ||
			db.idWaiters.Load() > 0 || db.freeIDsLocked() <= idsShortBelow)
		db.mu.Unlock()
		if due && !db.opts.DisableSnapshots {
			if err := db.snapshotLocked(db.stopBg); err != nil {
				return err
			}
		}
	}
	return nil
}

// compactRound is one pass over the segments; it returns how many it
// retired. sealActive seals the active segment first if it qualifies;
// tombsOnly limits the round to segments whose needed tombstones became
// droppable; maxRetire > 0 ends it after that many segments are retired.
// db.compactMu must be held.
func (db *DB) compactRound(threshold float64, rate int64, sealActive, tombsOnly bool, maxRetire int) (int, error) {
	if err := db.freeIDsIfShort(); err != nil {
		return 0, err
	}
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return 0, db.failed
	}
	mins := db.genMinsLocked()
	qualifies := func(sf *segFile) bool {
		r := db.reclaimableWith(sf, mins)
		if tombsOnly && r == sf.dead.Load() {
			return false
		}
		return r > 0 && float64(r) >= threshold*float64(sf.flushed.Load()-segment.HeaderSize)
	}
	// Sealing the active segment is optional: it is left for a later pass
	// when ids are short, so that compaction's copies keep the last ones.
	if sealActive && qualifies(db.active) && db.freeIDsLocked() > idForPut {
		db.idFloor = idForCompact
		err := db.rollLocked()
		db.idFloor = idForPut
		if err != nil {
			db.mu.Unlock()
			return 0, err
		}
	}
	mins = db.genMinsLocked() // after the roll
	var todo []*segFile
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil || sf == db.active || db.damaged[sf.gen] || db.scanPinnedLocked(sf.gen) {
			continue
		}
		if qualifies(sf) {
			todo = append(todo, sf)
		}
	}
	// Oldest first, as a rule. When ids are short, the segments that free
	// the most bytes go first instead: a segment of mostly live records
	// can take more room to copy than it frees (sync marks, alignment),
	// and copying those first could use up the last ids before anything
	// is freed.
	short := db.freeIDsLocked() <= idsShortBelow
	gain := make(map[*segFile]int64, len(todo))
	for _, sf := range todo {
		gain[sf] = db.reclaimableWith(sf, mins)
	}
	db.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool {
		if short && gain[todo[i]] != gain[todo[j]] {
			return gain[todo[i]] > gain[todo[j]]
		}
		return todo[i].gen < todo[j].gen
	})
	retired := 0
	for _, sf := range todo {
		if db.stopping() {
			return retired, ErrClosed
		}
		if maxRetire > 0 && retired >= maxRetire {
			break
		}
		if !db.idsToCopy(sf, gain[sf]) {
			continue
		}
		ok, err := db.compactSegment(sf, rate)
		if errors.Is(err, ErrFull) && retired > 0 {
			// Out of ids for copies after freeing some: what is left waits
			// for the next pass, after the snapshot that frees them.
			break
		}
		if err != nil {
			return retired, err
		}
		if ok {
			retired++
		}
		if err := db.freeIDsIfShort(); err != nil {
			return retired, err
		}
	}
	if retired > 0 {
		db.st.compactions.Add(1)
	}
	return retired, nil
}

// idsShortBelow: with this many free segment ids or fewer, compaction
// works as if the log were full (see compactRound).
const idsShortBelow = 2 * idReserve

// idsToCopy reports whether compacting sf, which frees gain bytes, may
// spend the segment ids its copies need. A segment frees one id (once the
// next snapshot lets its file go) but its copies take new segments of the
// current SegmentSize: more than one if it was written with larger
// segments, and about one when it is mostly live (sync marks and alignment
// may make the copies larger than what they came from). Copies that could
// leave fewer than idsShortBelow ids free are put off, so a pass never
// spends the ids that deletes and the copies of better candidates need;
// with few ids, only segments at least a quarter reclaimable are copied.
func (db *DB) idsToCopy(sf *segFile, gain int64) bool {
	records := sf.flushed.Load() - segment.HeaderSize
	room := db.opts.SegmentSize - segment.HeaderSize
	copyBytes := max(records-gain, 0)
	need := (copyBytes + copyBytes/8 + room - 1) / room
	db.mu.Lock()
	free := int64(db.freeIDsLocked())
	db.mu.Unlock()
	if free > idsShortBelow+need {
		return true
	}
	return need <= 1 && 4*gain >= records
}

// reclaimableWith returns the bytes compacting sf would reclaim: its dead
// bytes, plus its tombstones once nothing they shadow can exist any more
// (every other segment's generation is above what they shadow). mins is
// genMinsLocked's reading, taken under the same hold of db.mu.
func (db *DB) reclaimableWith(sf *segFile, mins genMins) int64 {
	n := sf.dead.Load()
	if t := sf.tomb.Load(); t > 0 && sf.tombMaxShadow.Load() < mins.other(sf) {
		n += t
	}
	return n
}

// genMins holds the two oldest generations among the existing segment
// files (open and awaiting deletion), so that the oldest generation other
// than any one segment's is found in O(1): a compaction round asks for
// every segment, and scanning 8192 ids each time made it quadratic.
type genMins struct {
	first, second uint64
	firstSeg      *segFile // the open segment of generation first, if any
}

func (m genMins) other(sf *segFile) uint64 {
	if sf != nil && sf == m.firstSeg {
		return m.second
	}
	return m.first
}

// genMinsLocked reads the two oldest generations. db.mu must be held.
func (db *DB) genMinsLocked() genMins {
	m := genMins{first: math.MaxUint64, second: math.MaxUint64}
	add := func(gen uint64, sf *segFile) {
		switch {
		case gen < m.first:
			m.second, m.first, m.firstSeg = m.first, gen, sf
		case gen < m.second:
			m.second = gen
		}
	}
	for i := range db.segs {
		if o := db.segs[i].Load(); o != nil {
			add(o.gen, o)
		}
	}
	for _, r := range db.awaiting {
		add(r.gen, nil)
	}
	return m
}

// compactChunk is how many record bytes are handled per hold of db.mu.
const compactChunk = 64 << 10

// compactSegment moves the live records of sealed segment sf to the head
// of the log and retires sf. It reports whether sf was retired (false: it
// is damaged and skipped). An error means the pass must stop (I/O, a
// failed handle, Close).
func (db *DB) compactSegment(sf *segFile, rate int64) (bool, error) {
	db.mu.Lock()
	// Tombstones shadowing a generation older than every other existing
	// segment are dropped; so are expired puts without a replacement.
	minOther := db.genMinsLocked().other(sf)
	db.mu.Unlock()
	ok, err := db.walkSegment(sf, rate, func(e *segment.Entry, now int64) error {
		return db.compactRecordLocked(sf, e, minOther, now)
	})
	if !ok || err != nil {
		return false, err
	}
	return db.retireSegment(sf)
}

// walkSegment reads sealed segment sf in order, in chunks of compactChunk
// record bytes, and calls each for every record of a chunk with db.mu
// held (and idFloor idForCompact, for the copies it appends); now is the
// chunk's time. Reading is held to rate bytes per second (0: no limit).
// It reports false, with a nil error, when sf cannot be walked to its end:
// a record does not decode (sf is then skipped as damaged, see
// skipDamaged) or a scan started since the pass chose sf (what was
// handled before lies below the scan's end and is seen there; the rest
// stays in sf, which the scan reads; a later pass goes on). An error
// means the pass must stop (I/O, a failed handle, Close). Compaction and
// cache mode's eviction both walk segments this way.
func (db *DB) walkSegment(sf *segFile, rate int64, each func(e *segment.Entry, now int64) error) (bool, error) {
	end := sf.flushed.Load()
	start := time.Now()
	// The walk reads sf in order: read ahead meanwhile (readers of sf's
	// records get readahead too until it is done). A retired sf is closed
	// by then and keeps no hint.
	db.adviseSeg(sf, vfs.AccessSequential)
	defer func() {
		if db.segs[sf.id].Load() == sf {
			db.adviseSeg(sf, vfs.AccessRandom)
		}
	}()
	var entries []segment.Entry
	for off := int64(segment.HeaderSize); off < end; {
		entries = entries[:0]
		chunkEnd := off + compactChunk
		for off < end && off < chunkEnd {
			r, size, err := db.decodeMapped(sf, off, end) // a read fault is an error, not a crash
			if err != nil {
				db.skipDamaged(sf, segment.WithFile(err, sf.name))
				return false, nil
			}
			entries = append(entries, segment.Entry{Off: off, Size: size, Rec: r})
			off += int64(size)
		}
		db.mu.Lock()
		if db.scanPinnedLocked(sf.gen) {
			db.mu.Unlock()
			return false, nil
		}
		err := db.failed
		now := db.now()
		db.idFloor = idForCompact
		for i := 0; err == nil && i < len(entries); i++ {
			err = each(&entries[i], now)
		}
		db.idFloor = idForPut
		db.mu.Unlock()
		if err != nil {
			return false, err
		}
		if db.stopping() {
			return false, ErrClosed
		}
		if rate > 0 {
			// Sleep until the bytes read so far are within the budget.
			due := time.Duration(float64(off-segment.HeaderSize) / float64(rate) * float64(time.Second))
			if d := due - time.Since(start); d > 0 {
				select {
				case <-time.After(d):
				case <-db.stopBg:
					return false, ErrClosed
				}
			}
		}
	}
	return true, nil
}

// skipDamaged remembers sf as damaged until reopen, so that no later pass
// retries it, and reports it: the bytes of its damaged stretches (found as
// segment.Check does, resuming at the next record that decodes) are added
// to Stats.CompactionSkippedBytes. Records already moved stay moved; sf
// keeps every byte for readers, Verify and salvage.
func (db *DB) skipDamaged(sf *segFile, err error) {
	probs, cerr := db.checkMapped(sf)
	var skipped int64
	for _, p := range probs {
		skipped += p.Resume - p.Offset
	}
	if cerr != nil {
		// The mapping itself cannot be read (a read fault): all of it
		// counts as damaged.
		skipped = sf.flushed.Load() - segment.HeaderSize
		err = cerr
	}
	db.st.compactSkipped.Add(skipped)
	db.mu.Lock()
	db.damaged[sf.gen] = true
	db.mu.Unlock()
	db.opts.Logger.Error("marlin: compaction skips a damaged segment until reopen", "file", sf.name,
		"damaged_bytes", skipped, "err", err)
}

// compactRecordLocked decides the fate of one record of a segment being
// compacted (see the rules above). minOther is the oldest generation of
// any other existing segment. db.mu must be held.
func (db *DB) compactRecordLocked(sf *segFile, e *segment.Entry, minOther uint64, now int64) error {
	r := &e.Rec
	if r.Kind != segment.KindPut && r.Kind != segment.KindDelete {
		return nil // batch commits and sync marks are not needed any more
	}
	loc := segment.Loc(sf.id, e.Off)
	h := db.hash(r.Key)
	if r.Kind == segment.KindDelete {
		shadow := tombShadow(r, sf.gen)
		if shadow < minOther || db.hasKeyLocked(h, r.Key) {
			return nil
		}
		return db.reappendLocked(segment.KindDelete, h, r.Key, tombValue(shadow), 0, 0, shadow)
	}
	live := db.ix.Lookup(h, func(l uint64) bool { return l == loc })
	expired := r.Expiry != 0 && r.Expiry <= now
	switch {
	case live && !expired:
		return db.reappendLocked(segment.KindPut, h, r.Key, r.Value, r.Expiry, loc, 0)
	case live && db.needsMaskLocked(r.Key):
		// Expired, but it hides the base's value: it goes on as a mask.
		return db.remaskLocked(h, r.Key, loc, e.Size)
	case live: // expired but still indexed
		if db.ix.DeleteExact(h, loc) {
			sf.live.Add(-int64(e.Size))
			sf.dead.Add(int64(e.Size))
		}
		fallthrough
	case expired:
		// Older versions of the key lie in segments up to sf's generation.
		if sf.gen >= minOther && !db.hasKeyLocked(h, r.Key) {
			return db.reappendLocked(segment.KindDelete, h, r.Key, tombValue(sf.gen), 0, 0, sf.gen)
		}
	}
	return nil
}

// reappendLocked appends a copy of a record with a fresh sequence number.
// For a put it switches the index entry from oldLoc to the copy; a
// tombstone's copy shadows generation shadow.
func (db *DB) reappendLocked(kind segment.Kind, h uint64, key, value []byte, expiry int64, oldLoc, shadow uint64) error {
	return db.reappendSizedLocked(kind, h, key, value, expiry, oldLoc, segment.Size(len(key), len(value), expiry != 0), shadow)
}

// reappendSizedLocked is reappendLocked for a put whose old record at
// oldLoc has oldSize bytes (the copy may be smaller: a mask, base.go).
func (db *DB) reappendSizedLocked(kind segment.Kind, h uint64, key, value []byte, expiry int64, oldLoc uint64, oldSize int, shadow uint64) error {
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
		nsf.noteTomb(size, shadow)
		return nil
	}
	if !db.ix.CompareAndSwap(h, oldLoc, loc) {
		// Impossible while db.mu is held; keep the books right anyway.
		nsf.dead.Add(int64(size))
		return nil
	}
	oid, _ := segment.SplitLoc(oldLoc)
	osf := db.segs[oid].Load()
	osf.live.Add(-int64(oldSize))
	osf.dead.Add(int64(oldSize))
	nsf.live.Add(int64(size))
	return nil
}
