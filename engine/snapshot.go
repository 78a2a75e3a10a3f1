package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Index snapshots make restarts fast: Open loads the newest valid snapshot
// at disk speed and replays only the log written after it.
//
// Writing one does not stop writers. The snapshot records the log position
// R (the replay position) before copying the index shard by shard; each
// shard copy is a consistent cut, but later shards may include writes made
// after R. When the copy is done, the active segment is fsynced and its end
// A (the accounting position) is recorded with the per-segment live-byte
// figures, which are exact at A. Every copied entry points before A, and
// everything before A is durable, so no entry can point at data a crash
// could lose. Recovery loads the entries, then replays the records from R
// on with "highest sequence number wins" (which repairs whatever the fuzzy
// copy caught or missed between R and A), counting live bytes only for
// records from A on.
//
// Compaction, the expirer and snapshots exclude each other (compactMu), so
// no segment a snapshot refers to disappears and no index entry goes away
// without a log record while it is written. A compacted segment's file is
// deleted only after a snapshot that does not list it is durable
// (deleteRetired), so the newest snapshot never names a missing segment;
// one that does (damage, a copied-in file) is ignored and the whole log is
// replayed.
//
// Scheduling (a snapshot of 10^9 keys is about 8 GB): a snapshot is written
// only when something changed since the last one; see snapshotDueLocked,
// retiredDueLocked and freeIDsIfShort. An idle database writes none.

// Snapshot writes an index snapshot now. Later Opens replay only what is
// written after it.
func (db *DB) Snapshot() error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	if err := db.startBg(); err != nil {
		return err
	}
	defer db.bg.Done()
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	return db.snapshotLocked(db.stopBg)
}

// snapshotLocked writes a snapshot into the database directory, giving up
// if stop closes. db.compactMu must be held.
func (db *DB) snapshotLocked(stop <-chan struct{}) error {
	start := time.Now()
	db.mu.Lock()
	n := db.snapSeq + 1
	db.mu.Unlock()
	rewritten := db.st.bytesRewritten.Load() // stable: compaction is excluded
	logBytes := db.st.bytesWritten.Load()
	written, err := db.writeSnapshot(db.dir, snapName(n), stop, nil)
	if err != nil {
		return err
	}
	db.mu.Lock()
	db.snapSeq = n
	db.snapValid = true
	db.snapWritten = written
	db.snapRewritten = rewritten
	db.snapLogBytes = logBytes
	db.snapAt = time.Now()
	db.mu.Unlock()
	db.removeOldSnapshots(n)
	db.st.snapshots.Add(1)
	db.st.snapshotNanos.Store(int64(time.Since(start)))
	// The new snapshot is durable and lists none of the retired segments:
	// their files may go now.
	return db.deleteRetired()
}

// snapshotDueLocked reports whether the background worker should write a
// snapshot now (see Options.SnapshotInterval): only if something changed
// since the last one, and then when the retired segments awaiting
// deletion are worth it, or, once the log written since the last one
// reaches SnapshotLogRatio times the snapshot's size (logWorthLocked),
// when the interval passed or the writes reach both SnapshotRecords and
// SnapshotChangeRatio of the keys. db.mu must be held.
func (db *DB) snapshotDueLocked() bool {
	written := db.st.records.Load() - db.snapWritten
	changed := written > 0 || db.st.bytesRewritten.Load() != db.snapRewritten || len(db.awaiting) > 0
	switch {
	case !changed:
		return false
	case !db.logWorthLocked():
	case time.Since(db.snapAt) >= db.opts.SnapshotInterval:
		return true
	case written >= db.opts.SnapshotRecords && float64(written) >= db.opts.SnapshotChangeRatio*float64(db.ix.Len()):
		return true
	}
	return db.retiredDueLocked()
}

// logWorthLocked reports whether the log written since the last snapshot
// is at least SnapshotLogRatio times the size of a snapshot written now.
//
// Invariant (write amplification): every background snapshot but those
// for retired segments is preceded by SnapshotLogRatio times its size in
// new log bytes, counted once, so their total is at most the log's bytes
// over SnapshotLogRatio. In a load from 0 to N thin keys (40-byte records,
// 8 bytes per key in a snapshot) with the ratio 2, a snapshot is due once
// the keys grew by 40% of the count at the time: the snapshots' sizes form
// a geometric series of ratio at most 0.6, 20 bytes per final key in all,
// half the log's 40. db.mu must be held.
func (db *DB) logWorthLocked() bool {
	if db.opts.SnapshotLogRatio < 0 {
		return true
	}
	since := db.st.bytesWritten.Load() - db.snapLogBytes
	return float64(since) >= db.opts.SnapshotLogRatio*float64(db.snapshotSizeEstimate())
}

// writeSnapshot writes the snapshot file name into dir through a temp file.
// before, if not nil, runs once the temp file is complete and fsynced but
// before it is renamed into place (a checkpoint copies the segments then).
// It returns the write count the snapshot covers. db.compactMu must be
// held.
func (db *DB) writeSnapshot(dir, name string, stop <-chan struct{}, before func(*snapMeta) error) (int64, error) {
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return 0, db.failed
	}
	if err := db.flushLocked(); err != nil {
		db.mu.Unlock()
		return 0, err
	}
	meta := snapMeta{replay: logPos{db.active.gen, db.active.flushed.Load()}}
	written := db.st.records.Load()
	db.mu.Unlock()
	if h := db.snapshotCopyHook.Load(); h != nil {
		(*h)()
	}

	tmp := filepath.Join(dir, snapTmpName)
	f, err := db.fs.Create(tmp)
	if err != nil {
		return 0, fmt.Errorf("marlin: snapshot: %w", err)
	}
	fail := func(err error) (int64, error) {
		_ = f.Close()
		_ = db.fs.Remove(tmp)
		return 0, fmt.Errorf("marlin: snapshot: %w", err)
	}
	w := &frameWriter{f: f}
	w.frame(snapHeader(db.now(), db.meta.id))
	var slots []uint64
	for sn := 0; sn < index.NumShards && w.err == nil; sn++ {
		if slots = db.ix.ShardSlots(sn, slots[:0]); len(slots) > 0 {
			w.shard(sn, slots)
			meta.entries += uint64(len(slots))
		}
		if sn%4096 == 0 && closed(stop) {
			return fail(ErrClosed)
		}
	}
	w.flushEntries()
	if w.err != nil {
		return fail(w.err)
	}

	if h := db.snapshotTrailerHook.Load(); h != nil {
		(*h)()
	}
	db.mu.Lock()
	if err := db.syncActiveLocked(); err != nil {
		db.mu.Unlock()
		return fail(err)
	}
	meta.acct = logPos{db.active.gen, db.active.flushed.Load()}
	meta.nextSeq, meta.nextGen = db.nextSeq, db.nextGen
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			meta.segs = append(meta.segs, snapSeg{id: sf.id, gen: sf.gen, size: sf.flushed.Load(),
				live: sf.live.Load(), ttlMin: sf.ttlMin.Load(),
				tomb: sf.tomb.Load(), tombMaxShadow: sf.tombMaxShadow.Load()})
		}
	}
	db.mu.Unlock()

	trailerAt := w.off
	w.frame(meta.encode())
	var foot [snapFooterSize]byte
	binary.LittleEndian.PutUint64(foot[:], uint64(trailerAt))
	copy(foot[8:], snapEndMagic)
	if w.err == nil {
		_, w.err = f.Write(foot[:])
	}
	if w.err != nil {
		return fail(w.err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = db.fs.Remove(tmp)
		return 0, fmt.Errorf("marlin: snapshot: %w", err)
	}
	if before != nil {
		if err := before(&meta); err != nil {
			_ = db.fs.Remove(tmp)
			return 0, err
		}
	}
	if err := db.fs.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = db.fs.Remove(tmp)
		return 0, fmt.Errorf("marlin: snapshot: %w", err)
	}
	if err := db.fs.SyncDir(dir); err != nil {
		return 0, fmt.Errorf("marlin: snapshot: %w", err)
	}
	return written, nil
}

// removeOldSnapshots deletes snapshot files older than n. Failures only
// cost disk space.
func (db *DB) removeOldSnapshots(n uint64) {
	names, err := db.fs.List(db.dir)
	if err != nil {
		return
	}
	removed := false
	for _, name := range names {
		if k, ok := parseSnapName(name); ok && k < n {
			removed = db.fs.Remove(filepath.Join(db.dir, name)) == nil || removed
		}
	}
	if removed {
		_ = db.fs.SyncDir(db.dir)
	}
}

// loadSnapshot loads the newest snapshot into the (empty) index. onDisk
// holds the generations of the segment files present. It returns the
// snapshot's trailer, or an error saying why the snapshot cannot be used;
// the index may then hold part of it and must be reset.
func (db *DB) loadSnapshot(names []string, onDisk map[uint64]int64) (*snapMeta, error) {
	newest, found := newestSnapshot(names)
	if !found {
		return nil, errNoSnapshot
	}
	db.snapSeq = newest
	db.snapValid = true // until proven otherwise below
	name := filepath.Join(db.dir, snapName(newest))
	snap, err := openSnapshot(db.fs, name)
	if err != nil {
		return nil, err
	}
	defer snap.f.Close()
	meta := snap.meta
	if snap.hdr.id != db.meta.id {
		// A copied-in snapshot of another database: its entries point into
		// other files, and its fingerprints come from another hash key.
		// Nothing in it is trusted, not even its segment sizes.
		return nil, fmt.Errorf("%s belongs to another database (id %s; this database is %s)", name, snap.hdr.id, db.meta.id)
	}
	// The snapshot was written at this time of the DB's clock: expiry
	// judged later never uses an earlier time (see DB.now).
	db.raiseClockFloor(snap.hdr.createdMs)
	// The trailer and the header are intact: the segment sizes it records
	// were fsynced before it was written, whether or not the rest of the
	// snapshot can be used (see provenSize).
	db.provenSize = meta.provenSizes()
	if err := meta.check(onDisk); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var sizes [segment.MaxSegments]int64 // id -> size in the snapshot (0: not listed)
	for _, s := range meta.segs {
		sizes[s.id] = s.size
	}
	loaded, err := db.loadEntries(snap, &sizes)
	db.ix.FinishLoad() // give back the pages the load populated ahead
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if loaded != meta.entries {
		return nil, fmt.Errorf("%s: %d entries, trailer says %d", name, loaded, meta.entries)
	}
	return meta, nil
}

var errNoSnapshot = errors.New("no snapshot")

// check verifies that the segments the snapshot needs are on disk, at
// least as long as it saw them.
func (m *snapMeta) check(onDisk map[uint64]int64) error {
	if m.acct.before(m.replay) {
		return fmt.Errorf("accounting position before replay position")
	}
	seen := map[uint16]bool{}
	for _, s := range m.segs {
		size, ok := onDisk[s.gen]
		switch {
		case seen[s.id]:
			return fmt.Errorf("segment id %d listed twice", s.id)
		case !ok:
			return fmt.Errorf("segment %s is gone (stale snapshot)", segment.FileName(s.gen))
		case size < s.size:
			// recover reports this as corruption (checkProvenSizes); this
			// check keeps the snapshot from being used when it is not.
			return fmt.Errorf("segment %s is shorter (%d) than when the snapshot was taken (%d)",
				segment.FileName(s.gen), size, s.size)
		}
		seen[s.id] = true
	}
	return nil
}

// snapshotter writes snapshots in the background: when SnapshotInterval
// has passed or SnapshotRecords writes were made since the last one.
func (db *DB) snapshotter() {
	defer db.bg.Done()
	t := time.NewTicker(min(db.opts.SnapshotInterval, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-db.stopBg:
			return
		case <-t.C:
		}
		db.mu.Lock()
		due := db.snapshotDueLocked()
		db.mu.Unlock()
		if !due {
			continue
		}
		db.compactMu.Lock()
		err := db.snapshotLocked(db.stopBg)
		db.compactMu.Unlock()
		if err != nil && !errors.Is(err, ErrClosed) {
			db.opts.Logger.Error("marlin: snapshot failed", "dir", db.dir, "err", err)
		}
	}
}

// closed reports whether ch is closed (nil never is).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// needSnapshotLocked reports whether Close should write a snapshot: none
// is valid, or writes or compaction happened since the last one (whose
// retired segments' files then go). db.mu must be held.
func (db *DB) needSnapshotLocked() bool {
	written := db.st.records.Load()
	return !db.opts.DisableSnapshots && !db.opts.ReadOnly && db.failed == nil &&
		(!db.snapValid || written != db.snapWritten || db.st.bytesRewritten.Load() != db.snapRewritten ||
			len(db.awaiting) > 0)
}
