package engine

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"slices"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Retiring compacted segments. A compacted segment leaves db.segs at once,
// but its file is deleted only after a snapshot that does not list it is
// durable, so the newest snapshot never names a missing segment (see
// compact.go); until then it waits in db.awaiting with its id retiring.

// retiredDueLocked reports whether the retired segments awaiting deletion
// are worth a snapshot now: they hold at least max(64 MiB, the estimated
// snapshot size) bytes, or 1/8 of the segment ids. db.mu must be held.
func (db *DB) retiredDueLocked() bool {
	var bytes int64
	for _, r := range db.awaiting {
		bytes += r.size
	}
	return bytes >= max(64<<20, db.snapshotSizeEstimate()) || len(db.awaiting) >= segment.MaxSegments/8
}

// snapshotSizeEstimate is about what a snapshot of the index takes: 8
// bytes per entry, 8 per shard run, frame headers, header and trailer.
func (db *DB) snapshotSizeEstimate() int64 {
	n := db.ix.Len()
	return 8*n + 8*min(n, index.NumShards) + 8*(8*n/snapFrameFlush+1) + 4096
}

// freeIDsIfShort writes a snapshot, which deletes the retired segments'
// files and frees their ids, when few ids are free and some await
// deletion: compaction must never stall the log for want of ids.
// db.compactMu must be held.
func (db *DB) freeIDsIfShort() error {
	db.mu.Lock()
	// Only when ids are really short, or when a write waits for ids and
	// a batch of retired segments can go: each snapshot walks the whole
	// index, so retired segments are let go in batches.
	free := db.freeIDsLocked()
	short := len(db.awaiting) > 0 && (free <= idForDelete ||
		db.idWaiters.Load() > 0 && free <= idForPut && len(db.awaiting) >= idReserve)
	db.mu.Unlock()
	if !short {
		return nil
	}
	if db.opts.DisableSnapshots {
		return nil // nothing waits: files are deleted at once
	}
	return db.snapshotLocked(db.stopBg)
}

// retiredSeg is a compacted segment whose file awaits deletion.
type retiredSeg struct {
	id   uint16
	gen  uint64
	name string
	size int64
}

// retireSegment takes a compacted segment out of service: fsync the copies,
// unpublish the segment, wait out its readers, close it, and queue its file
// for deletion after the next snapshot (at once without snapshots). A
// segment that still shows live bytes is recounted from the index first
// (accounting.go): a wrong figure is corrected with a warning, and if
// records of it are really still indexed it is skipped like a damaged one.
// It reports whether sf was retired.
func (db *DB) retireSegment(sf *segFile) (bool, error) {
	db.mu.Lock()
	if db.scanPinnedLocked(sf.gen) {
		// A scan started after the last copy and will read sf (all its
		// records are dead now, so it yields none of them): sf stays
		// until a later pass.
		db.mu.Unlock()
		return false, nil
	}
	if err := db.syncActiveLocked(); err != nil {
		db.mu.Unlock()
		return false, err
	}
	if n := sf.live.Load(); n != 0 {
		live := db.recountLiveLocked(sf)
		db.opts.Logger.Warn("marlin: compaction corrected a segment's live-byte count", "file", sf.name,
			"counted", n, "recounted", live)
		sf.live.Store(live)
		sf.dead.Store(sf.flushed.Load() - segment.HeaderSize - live - sf.tomb.Load())
		if live != 0 {
			db.damaged[sf.gen] = true
			db.mu.Unlock()
			db.opts.Logger.Error("marlin: compaction skips a segment whose records stay indexed", "file", sf.name,
				"live", live)
			return false, nil
		}
	}
	db.segs[sf.id].Store(nil)
	db.retiring[sf.id] = true
	db.mu.Unlock()

	db.guard.synchronize() // no reader holds sf's mapping after this
	r := retiredSeg{id: sf.id, gen: sf.gen, name: sf.name, size: sf.flushed.Load()}
	if cerr := sf.close(); cerr != nil {
		db.opts.Logger.Warn("marlin: closing a compacted segment", "file", sf.name, "err", cerr)
	}
	db.mu.Lock()
	db.awaiting = append(db.awaiting, r)
	db.mu.Unlock()
	if db.opts.DisableSnapshots {
		// No snapshot can need the file.
		return true, db.deleteRetired()
	}
	return true, nil
}

// deleteRetired deletes the files of the segments awaiting deletion, fsyncs
// the directory and frees their ids. It runs after a snapshot that does not
// list them is durable (or at once without snapshots). A file that cannot
// be removed keeps its id retiring and is retried after the next snapshot.
// db.compactMu must be held.
func (db *DB) deleteRetired() error {
	db.mu.Lock()
	list := slices.Clone(db.awaiting)
	db.mu.Unlock()
	if len(list) == 0 {
		return nil
	}
	var done, keep []retiredSeg
	var firstErr error
	for _, r := range list {
		if err := db.fs.Remove(r.name); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			keep = append(keep, r)
			if firstErr == nil {
				firstErr = fmt.Errorf("marlin: remove %s: %w", r.name, err)
			}
			continue
		}
		done = append(done, r)
	}
	if len(done) > 0 {
		if err := db.fs.SyncDir(db.dir); err != nil {
			// The removals may not be durable: the ids stay retiring (two
			// files must never claim one id).
			return fmt.Errorf("marlin: sync %s: %w", db.dir, err)
		}
	}
	db.mu.Lock()
	for _, r := range done {
		db.retiring[r.id] = false
		db.usedIDs--
		db.st.segmentsRemoved.Add(1)
		db.st.bytesReclaimed.Add(r.size)
	}
	db.awaiting = keep
	if len(keep) == 0 && !db.evicting {
		// No evicted file can come back after a crash any more.
		db.evictShadow = 0
	}
	db.mu.Unlock()
	return firstErr
}
