package engine

import (
	"fmt"
	"sort"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Live-byte accounting. Each segment's live figure is the total size of the
// records the index points at in it; compaction picks segments by it and
// removes a segment only once it reaches zero. The figure must be exact
// after any interleaving of writes, expiry, compaction, snapshots, crashes
// and restarts:
//
//   - every index change happens under db.mu together with its figure
//     update (writes, compaction, the expirer);
//   - a snapshot's figures and its copied entries must describe the same
//     index, so nothing may remove an entry without a log record while a
//     snapshot is written: the expirer (the one such remover besides
//     compaction) takes compactMu, which snapshots hold (expire.go);
//   - recovery counts a replayed record only from the snapshot's accounting
//     position on (replayUnit).
//
// As a last line of defence, compaction never stops on a wrong figure: a
// segment that still shows live bytes after all its indexed records were
// copied is recounted from the index (recountLiveLocked), corrected with a
// logged warning, and retired if nothing is indexed there.

// liveRecount returns, per segment id, the bytes of the records the index
// points at (the figure each segment's live counter must equal). Entries
// whose record cannot be read are skipped (Verify reports them elsewhere).
func (db *DB) liveRecount() map[uint16]int64 {
	live := map[uint16]int64{}
	var locs []uint64
	for sn := 0; sn < index.NumShards; sn++ {
		locs = db.ix.ShardLocations(sn, locs[:0])
		for _, loc := range locs {
			r, locked, err := db.recordAt(loc)
			if locked {
				db.tailMu.RUnlock()
			}
			if err != nil {
				continue
			}
			id, _ := segment.SplitLoc(loc)
			live[id] += int64(segment.Size(len(r.Key), len(r.Value), r.Expiry != 0))
		}
	}
	return live
}

// verifyAccounting reports every segment of db whose live-byte figure
// differs from a recount from db's own index. what names the index ("the
// snapshot-loaded index", "the replayed index"). Nothing may run
// concurrently with it (Verify's read-only handles).
func (db *DB) verifyAccounting(rep *VerifyReport, what string) {
	counted := db.liveRecount()
	var ids []int
	for i := range db.segs {
		if db.segs[i].Load() != nil {
			ids = append(ids, i)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return db.segs[ids[a]].Load().gen < db.segs[ids[b]].Load().gen })
	for _, i := range ids {
		sf := db.segs[i].Load()
		if got, want := sf.live.Load(), counted[uint16(i)]; got != want {
			rep.Problems = append(rep.Problems, VerifyProblem{File: sf.name, Offset: -1, Index: true,
				What: fmt.Sprintf("live bytes: Open computes %d from %s, its entries hold %d", got, what, want)})
		}
	}
}

// recountLiveLocked returns the bytes of sf's records that the index still
// points at, scanning sf (damaged stretches are skipped, as compaction
// does). db.mu must be held, and sf must still be mapped.
func (db *DB) recountLiveLocked(sf *segFile) int64 {
	var live int64
	end := sf.flushed.Load()
	segment.Check(sf.data[:end], sf.gen, db.lim, func(off int64, r *segment.Record, size int) {
		if r.Kind != segment.KindPut {
			return
		}
		loc := segment.Loc(sf.id, off)
		if db.ix.Lookup(db.hash(r.Key), func(l uint64) bool { return l == loc }) {
			live += int64(size)
		}
	})
	return live
}
