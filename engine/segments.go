package engine

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Segment ids are few (segment.MaxSegments), and a compacted segment's id
// is reused only after its file is deleted, which waits for a snapshot
// that does not list it (compact.go). So that a log of small segments or a
// long life cannot leave the database unwritable, the last ids are
// reserved:
//
//   - a new segment for puts (a user roll) leaves idReserve ids free;
//   - one for deletes leaves idReserve/2 free: a delete is never blocked by
//     a log full of dead data it would help reclaim;
//   - Open's active segment leaves one id free; if it cannot, Open makes
//     the newest segment active even though it may lack room (a write that
//     does not fit then rolls, and is refused or reclaims), so Open always
//     succeeds and never takes compaction's last id;
//   - one for compaction's copies may take the last id. Copying one
//     segment needs at most the active segment's room plus one new
//     segment, and after each segment compaction frees the retired ids
//     (freeIDsIfShort), so one free id is enough for it to make progress.
//     Compact seals the active segment first only when ids are plentiful.
//
// A write that finds no id it may take runs a compaction pass itself
// (reclaimIDs, unless background compaction is off) and retries once: a
// writer faster than the background compactor is slowed down, not
// failed. ErrFull from a write therefore means that live data fills the
// ids (or that compaction is off and has not been run); compaction, which
// frees ids by forcing the snapshot that lets retired files go
// (freeIDsIfShort), makes writes work again.
const idReserve = 8

// reclaimWait bounds how long a write waits for reclaimIDs' pass. The
// pass retires segments, which waits for every operation in flight; a
// write made inside another operation (a Put from a ForEach or View
// callback) holds that operation open, so an unbounded wait could never
// end. After the bound the write fails with ErrFull and the pass goes on.
var reclaimWait = 10 * time.Second // a variable for tests

// reclaimIDs runs when a write found no segment id it may take: unless
// background compaction is off, it runs reclaimIDsNow in the background
// and waits for it (at most reclaimWait). It reports whether the write
// should be retried: whether more than floor ids are free, floor being
// what the write itself must leave (idForDelete for deletes, which may use
// the reserve, else idForPut). The caller must hold no lock.
//
// With background compaction off (a negative CompactionThreshold) only a
// delete's write compacts: a delete is never blocked by a log full of dead
// data, while puts get ErrFull until Compact runs.
func (db *DB) reclaimIDs(floor int) bool {
	off := db.opts.CompactionThreshold < 0
	if off && floor != idForDelete || db.opts.ReadOnly || db.startBg() != nil {
		return false
	}
	db.idWaiters.Add(1)
	defer db.idWaiters.Add(-1)
	done := make(chan bool, 1)
	go func() {
		defer db.bg.Done()
		done <- db.reclaimIDsNow()
	}()
	// A compaction pass already running (it holds compactMu, so the pass
	// above waits for it) frees ids too: poll for them meanwhile.
	t := time.NewTimer(reclaimWait)
	defer t.Stop()
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-done:
			// Judge by what this write needs, not by what a put needs:
			// a pass may free too few ids for a put but enough for a
			// delete (a delete refused then was item 2's bug again).
			return db.idsFree(floor)
		case <-poll.C:
			if db.idsFree(floor) {
				return true
			}
		case <-t.C:
			return false
		case <-db.stopBg:
			return false
		}
	}
}

// reclaimBatch is how many segments a write's reclaim retires before it
// lets the write go on: enough to free ids for a while, few enough that
// the waiting write is slowed, not stopped (the background compactor does
// the rest).
const reclaimBatch = 4 * idReserve

// reclaimIDsNow compacts at the configured threshold and, if that frees no
// id, every segment with reclaimable bytes, writing the snapshot that frees
// the retired segments' ids. It reports whether a put may find an id now.
func (db *DB) reclaimIDsNow() bool {
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	thresholds := []float64{db.opts.CompactionThreshold, 0}
	if db.opts.CompactionThreshold < 0 { // background compaction off: a delete's reclaim
		thresholds = thresholds[1:]
	}
	for _, threshold := range thresholds {
		db.mu.Lock()
		free := db.freeIDsLocked()
		db.mu.Unlock()
		if free > idForPut {
			return true // another writer's pass freed some
		}
		if _, err := db.compactRound(threshold, 0, true, false, reclaimBatch); err != nil {
			db.opts.Logger.Error("marlin: compaction to free segment ids failed", "dir", db.dir, "err", err)
			return false
		}
		db.mu.Lock()
		awaiting := len(db.awaiting) > 0
		db.mu.Unlock()
		if awaiting && !db.opts.DisableSnapshots {
			if err := db.snapshotLocked(db.stopBg); err != nil {
				db.opts.Logger.Error("marlin: snapshot to free segment ids failed", "dir", db.dir, "err", err)
				return false
			}
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.freeIDsLocked() > idForPut
}

// idsFree reports whether a write leaving floor ids free may take a new
// segment id now.
func (db *DB) idsFree(floor int) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.freeIDsLocked() > floor
}

// Who is asking for a segment id (idFloor values: how many ids must stay
// free afterwards).
const (
	idForPut     = idReserve
	idForDelete  = idReserve / 2
	idForOpen    = 1
	idForCompact = 0
)

// freeIDLocked returns the lowest unused segment id, keeping db.idFloor ids
// free (see idReserve). db.mu must be held.
func (db *DB) freeIDLocked() (uint16, error) {
	first, free := -1, 0
	for i := range db.segs {
		if db.segs[i].Load() == nil && !db.retiring[i] {
			if first < 0 {
				first = i
			}
			free++
		}
	}
	if free != db.freeIDsLocked() {
		// A miscount only misjudges how short ids are (every decision
		// that matters scans here); the tests check that it never
		// happens (countFreeIDsLocked).
		db.usedIDs = segment.MaxSegments - free
	}
	if first < 0 || free <= db.idFloor {
		if len(db.awaiting) > 0 {
			db.kickCompactor() // it frees the retired segments' ids
		}
		return 0, ErrFull
	}
	return uint16(first), nil
}

// freeIDsLocked returns how many segment ids are free. db.mu must be held.
func (db *DB) freeIDsLocked() int { return segment.MaxSegments - db.usedIDs }

// countFreeIDsLocked counts the free ids by scanning (for tests: it must
// agree with freeIDsLocked). db.mu must be held.
func (db *DB) countFreeIDsLocked() int {
	n := 0
	for i := range db.segs {
		if db.segs[i].Load() == nil && !db.retiring[i] {
			n++
		}
	}
	return n
}

// createSegmentLocked creates, syncs and maps a new empty segment and makes
// it visible in db.segs. The header and the directory entry are fsynced
// before any record can refer to the file.
func (db *DB) createSegmentLocked() (*segFile, error) {
	return db.createSegmentSizedLocked(db.opts.SegmentSize)
}

// createSegmentSizedLocked is createSegmentLocked for a segment whose
// mapping covers mapLen bytes: more than SegmentSize only for a record
// that does not fit a segment of this open's size (see placeLocked).
func (db *DB) createSegmentSizedLocked(mapLen int64) (*segFile, error) {
	id, err := db.freeIDLocked()
	if err != nil {
		return nil, err
	}
	gen := db.nextGen
	name := filepath.Join(db.dir, segment.FileName(gen))
	f, err := db.fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("marlin: create segment: %w", err)
	}
	sf := &segFile{id: id, gen: gen, name: name, f: f}
	fail := func(err error) (*segFile, error) {
		_ = sf.close()
		// Make the removal durable: a half-created segment that came back
		// after a crash would stand after the active one's unsynced tail.
		if rerr := db.fs.Remove(name); rerr == nil {
			_ = db.fs.SyncDir(db.dir)
		}
		return nil, fmt.Errorf("marlin: create segment %s: %w", name, err)
	}
	if _, err := f.Write(segment.EncodeHeader(segment.Header{ID: id, Generation: gen, DBTag: db.meta.id.Tag()})); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := db.fs.SyncDir(db.dir); err != nil {
		return fail(err)
	}
	if sf.m, err = f.Map(int(max(mapLen, db.opts.SegmentSize))); err != nil {
		return fail(err)
	}
	db.nextGen++
	sf.data = sf.m.Bytes()
	db.adviseSeg(sf, vfs.AccessRandom)
	sf.flushed.Store(segment.HeaderSize)
	sf.durable.Store(segment.HeaderSize)
	sf.marked = segment.HeaderSize
	db.st.bytesWritten.Add(segment.HeaderSize)
	db.segs[id].Store(sf)
	db.usedIDs++
	return sf, nil
}

// rollLocked seals the active segment (flush, fsync) and starts a new one.
func (db *DB) rollLocked() error { return db.rollSizedLocked(db.opts.SegmentSize) }

// rollSizedLocked is rollLocked with a new segment mapped for mapLen bytes
// (see createSegmentSizedLocked).
func (db *DB) rollSizedLocked(mapLen int64) error {
	if err := db.syncActiveLocked(); err != nil {
		return err
	}
	// Seal with a sync mark, so that damage anywhere in a sealed segment is
	// reported as corruption even if it ends up last with records.
	if db.tail.start+int64(segment.Size(0, 10, false)) <= db.opts.SegmentSize {
		db.markLocked(0)
		if err := db.syncActiveLocked(); err != nil {
			return err
		}
	}
	sf, err := db.createSegmentSizedLocked(mapLen)
	if err != nil {
		// The old segment is still active and intact; later writes retry.
		return err
	}
	db.tailMu.Lock()
	old := db.active
	db.active = sf
	db.tail.start = segment.HeaderSize
	db.tail.n.Store(0)
	db.tailMu.Unlock()
	if old != nil {
		old.sealed.Store(true)
	}
	db.st.rolls.Add(1)
	db.noteSizeLocked()
	db.kickCompactor()
	return nil
}

// mkdirDurable creates dir and any missing parents and fsyncs the parent of
// each directory it created: a new directory's entry is durable only once
// its parent is synced (DESIGN-NOTES rule 2), and everything in a new
// database or checkpoint directory depends on it.
func mkdirDurable(fs vfs.FS, dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		_, err := fs.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range created {
		if err := fs.SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
