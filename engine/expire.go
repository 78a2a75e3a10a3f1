package engine

import (
	"sort"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Expiry. An expired key is invisible to reads at once (every read checks
// the record's expiry). Its index slot and its bytes are reclaimed later:
//
//   - The expirer removes expired entries from the index in bounded passes
//     (at most ExpiryBudget records read per pass, one pass per
//     ExpiryInterval), so no pass blocks for long. Each segment keeps the
//     earliest expiry among its records (ttlMin); a pass visits only
//     segments whose ttlMin has passed, resuming where the previous pass
//     stopped. When a sealed segment has been swept to its end its ttlMin
//     becomes the earliest expiry still in the future, so it is not read
//     again before then.
//   - The expired record itself stays on disk as a dead record until
//     compaction, which drops it, writing a tombstone when an older version
//     of the key could otherwise come back (see compact.go). Removing the
//     index entry without a tombstone is safe for that reason: on disk, the
//     expired record keeps shadowing older versions until compaction.
//   - The expirer excludes snapshots and compaction (compactMu; a busy pass
//     is skipped, not waited for), so a snapshot's entries and its
//     live-byte figures always describe the same index.

// noteExpiry lowers the segment's ttlMin to exp.
func (sf *segFile) noteExpiry(exp int64) {
	for {
		cur := sf.ttlMin.Load()
		if cur != 0 && cur <= exp || sf.ttlMin.CompareAndSwap(cur, exp) {
			return
		}
	}
}

// expiryCursor is the expirer's position in one segment's sweep.
type expiryCursor struct {
	off     int64 // next record to read
	nextMin int64 // earliest future expiry seen so far in this sweep
}

// expirer is the background worker.
func (db *DB) expirer() {
	defer db.bg.Done()
	t := time.NewTicker(db.opts.ExpiryInterval)
	defer t.Stop()
	cursors := map[*segFile]*expiryCursor{}
	for {
		select {
		case <-db.stopBg:
			return
		case <-t.C:
		}
		db.expirePass(cursors, db.opts.ExpiryBudget)
	}
}

// expirePass removes expired entries from the index, reading at most budget
// records. It returns how many entries it removed and records it read.
//
// A pass is skipped while a snapshot or a compaction pass runs (compactMu):
// it removes index entries without writing a log record, and a snapshot
// that copied an entry before its removal but took its live-byte figures
// after would make the next Open count the entry's bytes as dead while the
// entry is back in the index (issue 9, item 4; see accounting.go). The
// next pass, an interval later, does the work.
func (db *DB) expirePass(cursors map[*segFile]*expiryCursor, budget int) (removed, read int) {
	if !db.compactMu.TryLock() {
		return 0, 0
	}
	defer db.compactMu.Unlock()
	now := db.now()
	var todo []*segFile
	live := map[*segFile]bool{}
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			live[sf] = true
			if m := sf.ttlMin.Load(); m != 0 && m <= now {
				todo = append(todo, sf)
			}
		}
	}
	for sf := range cursors {
		if !live[sf] {
			delete(cursors, sf) // compacted away
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].gen < todo[j].gen })
	for _, sf := range todo {
		if read >= budget || db.stopping() {
			break
		}
		c := cursors[sf]
		if c == nil {
			c = &expiryCursor{off: segment.HeaderSize}
			cursors[sf] = c
		}
		n, r, done := db.expireSegment(sf, c, now, budget-read)
		removed += n
		read += r
		if done {
			delete(cursors, sf)
		}
	}
	db.st.expired.Add(int64(removed))
	return removed, read
}

// expireSegment sweeps sf from the cursor, reading at most budget records.
// It reports the entries removed, the records read, and whether the sweep of
// a sealed segment finished (its ttlMin is then updated).
func (db *DB) expireSegment(sf *segFile, c *expiryCursor, now int64, budget int) (removed, read int, done bool) {
	type victim struct {
		key  []byte
		loc  uint64
		size int
	}
	g, err := db.enter() // keeps sf mapped while we read it
	if err != nil {
		return 0, 0, false
	}
	defer db.exit(g)
	if db.segs[sf.id].Load() != sf {
		return 0, 0, true
	}
	sealed := sf.sealed.Load()
	end := sf.flushed.Load()
	var victims []victim
	for c.off < end && read < budget {
		r, size, err := db.decodeMapped(sf, c.off, end) // a read fault is an error, not a crash
		if err != nil {
			db.opts.Logger.Error("marlin: expiry sweep stopped at damaged record", "err", err)
			return removed, read + 1, false
		}
		read++
		if r.Kind == segment.KindPut && r.Expiry != 0 {
			if r.Expiry <= now {
				victims = append(victims, victim{r.Key, segment.Loc(sf.id, c.off), size})
			} else if c.nextMin == 0 || r.Expiry < c.nextMin {
				c.nextMin = r.Expiry
			}
		}
		c.off += int64(size)
	}
	if len(victims) > 0 {
		db.mu.Lock()
		for _, v := range victims {
			if db.needsMaskLocked(v.key) {
				continue // it hides the base's value (base.go)
			}
			if db.ix.DeleteExact(db.hash(v.key), v.loc) {
				sf.live.Add(-int64(v.size))
				sf.dead.Add(int64(v.size))
				removed++
			}
		}
		db.mu.Unlock()
	}
	if c.off >= end && sealed {
		// Nothing is appended to a sealed segment, so the sweep is complete.
		sf.ttlMin.Store(c.nextMin)
		return removed, read, true
	}
	return removed, read, false
}
