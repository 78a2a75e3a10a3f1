package engine

import (
	"math/bits"
	"sync/atomic"

	"github.com/marlinkv/marlin/segment"
)

// Cache mode (Options.MaxDiskBytes). When the database's files pass the
// limit, the background compactor evicts the oldest sealed segments whole,
// first in, first out, as log-structured caches do (memcached's extstore,
// Segcache): every record of an evicted segment that the index still
// points at is taken out of the index, and the segment is retired like a
// compacted one (retire.go: its file goes after the next snapshot that
// does not list it). Nothing is read per key but the segment itself, in
// order, and nothing is written but the rare copies below: eviction costs
// about one sequential read of what it drops.
//
// With Options.EvictSecondChance, a key read recently (readBits, set by
// lookup) is copied forward instead of dropped, up to half of the
// segment's bytes, so an eviction always frees at least half of what it
// reads.
//
// Durability. Eviction only drops records of sealed segments, which were
// fsynced when they were sealed, and never touches the records of keys
// that stay (a second-chance copy is a compaction copy: fsynced before the
// segment is retired). What it must not break is an acknowledged delete:
// until the evicted file is gone for good, a crash brings its keys back
// (the newest durable snapshot still lists it), and a delete made
// meanwhile of an evicted key found nothing to delete. So from the moment
// the first index entry of a segment is dropped until every evicted
// segment's file is deleted (evictShadow != 0), a delete of an absent key
// writes a tombstone anyway, shadowing the evicted generations: after a
// crash it hides the key again. Keys evicted and never deleted may come
// back after a crash; for a cache that is data it may serve, never a
// write it lost.
//
// Older versions. A key evicted from segment sf has no older version
// anywhere when sf is the oldest file on disk, the usual case. When an
// older file exists (a damaged segment eviction skips, a scan-pinned one,
// a compacted segment awaiting deletion), a tombstone shadowing sf's
// generation replaces the dropped record, exactly as compaction does for
// an expired one, so a replay of the older file cannot resurrect the key.
//
// Invariants (all under db.mu): evictShadow is 0 or at least the
// generation of every evicted segment whose file may still be on disk;
// it drops to 0 only when no retired segment awaits deletion and no
// eviction runs (deleteRetired).

// readBitsPerByte: each second-chance bitmap has one bit per this many
// bytes of MaxDiskBytes (at least 2^16 bits, at most 2^31: 256 MiB).
const readBitsPerByte = 256

// readBits is the second-chance state: two bitmaps indexed by key hash.
// Reads set bits in the current one; a key is "read recently" if its bit
// is set in either. Every time eviction has dropped half of MaxDiskBytes,
// the older bitmap is cleared and becomes the current one, so a key read
// within about the last half to whole limit's worth of writes is kept.
// Bits are never cleared one by one: a cold key that shares a hot key's
// bit is kept too (a wasted copy, within the copy budget), but can never
// take the hot key's mark away.
type readBits struct {
	maps    [2][]atomic.Uint64
	cur     atomic.Uint32 // index of the current bitmap
	dropped int64         // bytes evicted since the last rotation (compactMu)
}

// newReadBits sizes the second-chance bitmaps for maxDisk bytes of data.
func newReadBits(maxDisk int64) *readBits {
	n := max(maxDisk/readBitsPerByte, 1<<16)
	n = min(int64(1)<<bits.Len64(uint64(n-1)), 1<<31) // a power of two
	return &readBits{maps: [2][]atomic.Uint64{make([]atomic.Uint64, n/64), make([]atomic.Uint64, n/64)}}
}

// bit locates the bit of hash h. The index uses the hash's low bits for
// its shard and slot; the bitmaps use the high ones.
func (rb *readBits) bit(h uint64) (int, uint64) {
	i := (h >> 32) * uint64(len(rb.maps[0])*64) >> 32
	return int(i / 64), 1 << (i % 64)
}

// mark notes that the key of hash h was read. The common case, a bit
// already set, is a load without a write, so hot keys do not bounce a
// cache line between cores.
func (rb *readBits) mark(h uint64) {
	w, b := rb.bit(h)
	m := &rb.maps[rb.cur.Load()&1][w]
	if m.Load()&b == 0 {
		m.Or(b)
	}
}

// read reports whether the key of hash h was read recently.
func (rb *readBits) read(h uint64) bool {
	w, b := rb.bit(h)
	return (rb.maps[0][w].Load()|rb.maps[1][w].Load())&b != 0
}

// evicted counts n bytes evicted and rotates the bitmaps every half
// limit. db.compactMu must be held (one evictor at a time).
func (rb *readBits) evicted(n, maxDisk int64) {
	rb.dropped += n
	if rb.dropped < maxDisk/2 {
		return
	}
	rb.dropped = 0
	next := (rb.cur.Load() + 1) & 1
	for i := range rb.maps[next] {
		rb.maps[next][i].Store(0)
	}
	rb.cur.Store(next)
}

// diskUse is what the database's files take, as cache mode counts it.
type diskUse struct {
	segs     int64 // open segment files (the active one with its tail)
	awaiting int64 // retired segment files not deleted yet
	snapshot int64 // the estimated size of an index snapshot
	sealed   int   // sealed segments
}

func (u diskUse) total() int64 { return u.segs + u.awaiting + u.snapshot }

// diskUseLocked reads the database's disk use. db.mu must be held.
func (db *DB) diskUseLocked() diskUse {
	var u diskUse
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			u.segs += sf.flushed.Load()
			if sf != db.active {
				u.sealed++
			}
		}
	}
	u.segs += db.tail.n.Load()
	for _, r := range db.awaiting {
		u.awaiting += r.size
	}
	if !db.opts.DisableSnapshots {
		u.snapshot = db.snapshotSizeEstimate()
	}
	return u
}

// evictSlack is how far below MaxDiskBytes an eviction round brings the
// segments: every round ends with a snapshot (which deletes the files),
// so rounds are spaced by at least the snapshot's size and a sixteenth of
// the limit, and by a segment, but never by more than half the limit.
func (db *DB) evictSlack(u diskUse) int64 {
	s := max(db.opts.MaxDiskBytes/16, db.opts.SegmentSize, 2*u.snapshot)
	return min(s, db.opts.MaxDiskBytes/2)
}

// evictPass evicts the oldest sealed segments while the database is over
// Options.MaxDiskBytes, down to the limit less evictSlack, then writes
// the snapshot that lets their files go. Reading is held to
// CompactionRate unless the files are over the limit by more than the
// slack (writes outrun eviction: it catches up at full speed).
func (db *DB) evictPass() error {
	if db.opts.MaxDiskBytes <= 0 || db.opts.ReadOnly {
		return nil
	}
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	if err := db.freeIDsIfShort(); err != nil {
		return err
	}
	db.mu.Lock()
	u := db.diskUseLocked()
	db.mu.Unlock()
	if u.total() <= db.opts.MaxDiskBytes {
		return nil
	}
	target := db.opts.MaxDiskBytes - db.evictSlack(u)
	// A pass tries at most as many segments as existed when it began: it
	// ends even if its own copies (second chance, tombstones) kept the
	// files over the target, or a segment cannot go (pinned meanwhile).
	evicted, tries := 0, u.sealed
	defer func() {
		db.mu.Lock()
		db.evicting = false
		if len(db.awaiting) == 0 {
			// Every evicted file is deleted (at once, without snapshots).
			db.evictShadow = 0
		}
		db.mu.Unlock()
	}()
	for {
		if db.stopping() {
			return ErrClosed
		}
		db.mu.Lock()
		if db.failed != nil {
			db.mu.Unlock()
			return db.failed
		}
		u = db.diskUseLocked()
		if u.segs+u.snapshot <= target {
			db.mu.Unlock()
			break
		}
		sf, damaged := db.oldestEvictableLocked()
		if sf == nil || tries == 0 {
			db.mu.Unlock()
			if damaged {
				db.opts.Logger.Error("marlin: cache mode cannot evict past a damaged segment until the database is reopened or repaired (marlin verify --repair)",
					"dir", db.dir, "over_by", u.total()-db.opts.MaxDiskBytes)
			}
			break
		}
		rate := db.opts.CompactionRate
		if u.total() > db.opts.MaxDiskBytes+db.evictSlack(u) {
			rate = 0
		}
		tries--
		db.evicting = true
		db.evictShadow = max(db.evictShadow, sf.gen)
		db.mu.Unlock()
		ok, err := db.evictSegment(sf, rate)
		if err != nil {
			return err
		}
		if !ok {
			continue // damaged (the next oldest) or pinned (nil: stop)
		}
		evicted++
		db.st.segmentsEvicted.Add(1)
		if err := db.freeIDsIfShort(); err != nil {
			return err
		}
	}
	db.mu.Lock()
	due := len(db.awaiting) > 0
	db.mu.Unlock()
	if due && !db.opts.DisableSnapshots {
		// Deletes the evicted files (and clears evictShadow).
		return db.snapshotLocked(db.stopBg)
	}
	return nil
}

// oldestEvictableLocked returns the sealed segment of the lowest
// generation, or nil if there is none or it may not be evicted now:
// pinned by a scan (eviction waits for the scan) or damaged (eviction
// stops until a reopen or a repair; damaged is true then). Only the
// oldest segment is ever evicted: evicting a newer one would leave an
// older file whose versions of the evicted keys a replay could bring
// back, so each evicted key would need a tombstone, and those tombstones
// would have to be copied forward for as long as the older file stays,
// by every later eviction. db.mu must be held.
func (db *DB) oldestEvictableLocked() (sf *segFile, damaged bool) {
	for i := range db.segs {
		s := db.segs[i].Load()
		if s == nil || s == db.active {
			continue
		}
		if sf == nil || s.gen < sf.gen {
			sf = s
		}
	}
	switch {
	case sf == nil || db.scanPinnedLocked(sf.gen):
		return nil, false
	case db.damaged[sf.gen]:
		return nil, true
	}
	return sf, false
}

// evictSegment drops the records of sealed segment sf from the index
// (copying the second-chance ones forward) and retires sf. It reports
// whether sf was retired (false: damaged or pinned; it stays).
func (db *DB) evictSegment(sf *segFile, rate int64) (bool, error) {
	db.mu.Lock()
	minOther := db.genMinsLocked().other(sf)
	db.mu.Unlock()
	end := sf.flushed.Load()
	// Second-chance copies may take half of what the segment holds.
	copyBudget := (end - segment.HeaderSize) / 2
	ok, err := db.walkSegment(sf, rate, func(e *segment.Entry, now int64) error {
		return db.evictRecordLocked(sf, e, minOther, now, &copyBudget)
	})
	if !ok || err != nil {
		return false, err
	}
	if db.readBits != nil {
		db.readBits.evicted(end, db.opts.MaxDiskBytes)
	}
	return db.retireSegment(sf)
}

// evictRecordLocked decides the fate of one record of a segment being
// evicted: tombstones, superseded and expired puts as compaction decides
// them (compactRecordLocked); a live put is dropped, or copied forward if
// it was read and the copy budget allows. db.mu must be held.
func (db *DB) evictRecordLocked(sf *segFile, e *segment.Entry, minOther uint64, now int64, budget *int64) error {
	r := &e.Rec
	if r.Kind != segment.KindPut || (r.Expiry != 0 && r.Expiry <= now) {
		return db.compactRecordLocked(sf, e, minOther, now)
	}
	loc := segment.Loc(sf.id, e.Off)
	h := db.hash(r.Key)
	if !db.ix.Lookup(h, func(l uint64) bool { return l == loc }) {
		return nil // superseded
	}
	if db.readBits != nil && *budget >= int64(e.Size) && db.readBits.read(h) {
		*budget -= int64(e.Size)
		db.st.secondChances.Add(1)
		return db.reappendLocked(segment.KindPut, h, r.Key, r.Value, r.Expiry, loc, 0)
	}
	if db.needsMaskLocked(r.Key) {
		// Dropping the key would show the base's value: a mask hides it.
		db.st.evictions.Add(1)
		db.st.evictedBytes.Add(int64(e.Size))
		return db.remaskLocked(h, r.Key, loc, e.Size)
	}
	if db.ix.DeleteExact(h, loc) {
		sf.live.Add(-int64(e.Size))
		sf.dead.Add(int64(e.Size))
		db.st.evictions.Add(1)
		db.st.evictedBytes.Add(int64(e.Size))
	}
	// An older version may lie in an older file (see above).
	if sf.gen >= minOther && !db.hasKeyLocked(h, r.Key) {
		return db.reappendLocked(segment.KindDelete, h, r.Key, tombValue(sf.gen), 0, 0, sf.gen)
	}
	return nil
}

// absentShadowLocked is what a delete of a key the index does not hold
// must shadow: the evicted generations whose files may still come back
// after a crash, or 0 (write nothing). db.mu must be held.
func (db *DB) absentShadowLocked() uint64 { return db.evictShadow }
