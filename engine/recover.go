package engine

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/marlinkv/marlin/index"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Recovery rebuilds the index by replaying every segment, oldest
// generation first. The order does not decide which version of a key wins:
// every record carries a sequence number and the highest one wins, because
// (with compaction) a copy of an old record can sit in a newer segment than
// a fresh overwrite.
//
// Every segment is opened before any record is replayed, and tombstones
// occupy no index entry (see replayUnit for why both are needed).
//
// Damage handling (DESIGN-NOTES rule 7): every segment but the newest was
// fsynced before its successor received records, so any bad record in it
// is corruption and Open fails with ErrCorrupt naming the file and offset.
// In the newest segment (and the ones before it that only empty segments
// follow: tornTailSegments), a bad record, a short read or a batch without
// its commit may be a torn write that was never fsynced: the segment is
// truncated there and fsynced before anything is appended, unless a valid
// sync mark further on, or the size the newest index snapshot recorded
// (proven.go), proves that the damaged bytes had been fsynced, in which
// case it is corruption too. LogEnds, PlanRepair and Verify take the same
// decision from the same code (fsyncedProof, segFacts.end).

func (db *DB) recover() error {
	start := time.Now()
	defer func() { db.st.openNanos.Store(int64(time.Since(start))) }()
	names, err := db.fs.List(db.dir)
	if err != nil {
		return fmt.Errorf("marlin: list %s: %w", db.dir, err)
	}
	if err := db.loadIdentity(names); err != nil {
		return err
	}
	// Replay keeps expired puts of the base's keys (base.go).
	if err := db.loadBase(names); err != nil {
		return err
	}
	if !db.opts.ReadOnly {
		if err := db.removeSnapshotFiles(names, db.opts.dropSnapshots); err != nil {
			return err
		}
	}
	gens, onDisk, err := listSegments(db.fs, db.dir, names)
	if err != nil {
		return fmt.Errorf("marlin: %w", err)
	}
	if !db.opts.DisableSnapshots && !db.opts.dropSnapshots {
		meta, err := db.loadSnapshot(names, onDisk)
		if perr := db.checkProvenSizes(onDisk); perr != nil {
			return perr
		}
		if err == nil {
			var ok bool
			if ok, err = db.recoverFrom(meta, gens, onDisk); err != nil || ok {
				return err
			}
			err = fmt.Errorf("the log does not reach the snapshot's durable position")
		}
		db.snapValid = false
		if err != errNoSnapshot {
			db.opts.Logger.Warn("marlin: ignoring index snapshot, replaying the whole log", "dir", db.dir, "reason", err)
		}
		if err := db.resetForReplay(); err != nil {
			return err
		}
	} else if !db.opts.dropSnapshots {
		// Without using the snapshot, what it proves fsynced still holds:
		// a full replay must not cut it as a torn tail.
		db.provenSize = newestProvenSizes(db.fs, db.dir, names, db.meta.id)
		if perr := db.checkProvenSizes(onDisk); perr != nil {
			return perr
		}
	}
	return db.replayAll(gens, onDisk)
}

// segmentGens returns the generations of the segment files in names (a
// directory listing), ascending.
func segmentGens(names []string) []uint64 {
	var gens []uint64
	for _, n := range names {
		if g, ok := segment.ParseFileName(n); ok {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	return gens
}

// listSegments returns the generations of the segment files in names
// (dir's listing), ascending, and their sizes by generation.
func listSegments(fs vfs.FS, dir string, names []string) ([]uint64, map[uint64]int64, error) {
	gens := segmentGens(names)
	onDisk := make(map[uint64]int64, len(gens))
	for _, g := range gens {
		fi, err := fs.Stat(filepath.Join(dir, segment.FileName(g)))
		if err != nil {
			return nil, nil, err
		}
		onDisk[g] = fi.Size()
	}
	return gens, onDisk, nil
}

// tornTailSegments returns the segments whose tail may be torn: the newest,
// and before it any segment followed only by segments that hold no record
// (a roll whose new segment never received a record, or a segment whose
// failed creation was undone but whose removal did not reach the disk).
// Every other segment was fsynced, and sealed with a sync mark, before its
// successor received records.
func tornTailSegments(gens []uint64, onDisk map[uint64]int64) map[uint64]bool {
	m := map[uint64]bool{}
	for i := len(gens) - 1; i >= 0; i-- {
		m[gens[i]] = true
		if onDisk[gens[i]] > segment.HeaderSize {
			break
		}
	}
	return m
}

// removeSnapshotFiles deletes a leftover snapshot temp file and, with all
// set, every snapshot (Repair). names is the directory listing.
func (db *DB) removeSnapshotFiles(names []string, all bool) error {
	if err := removeSnapshots(db.fs, db.dir, names, all); err != nil {
		return fmt.Errorf("marlin: %w", err)
	}
	return nil
}

// removeSnapshots deletes the snapshot temp file and, with all set, every
// snapshot file listed in names (dir's listing), and fsyncs dir if it
// removed any.
func removeSnapshots(fs vfs.FS, dir string, names []string, all bool) error {
	removed := false
	for _, n := range names {
		if _, isSnap := parseSnapName(n); n == snapTmpName || all && isSnap {
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fs.SyncDir(dir)
	}
	return nil
}

// resetForReplay undoes a failed snapshot load: an empty index and no open
// segments.
func (db *DB) resetForReplay() error {
	for i := range db.segs {
		if sf := db.segs[i].Swap(nil); sf != nil {
			_ = sf.close()
		}
	}
	if db.ix.Len() == 0 {
		return nil
	}
	_ = db.ix.Close()
	ix, err := index.New(int(db.opts.IndexReserve))
	if err != nil {
		return fmt.Errorf("marlin: %w", err)
	}
	db.ix = ix
	return nil
}

// replayAll rebuilds the index from every segment. Every segment is opened
// and registered before any record is replayed (see replayUnit: a location
// in a segment not yet open would look stale).
func (db *DB) replayAll(gens []uint64, onDisk map[uint64]int64) error {
	var newest *segFile
	torn := tornTailSegments(gens, onDisk)
	var opened []*segFile
	for i, gen := range gens {
		db.nextGen = max(db.nextGen, gen+1)
		isNewest := i == len(gens)-1
		sf, err := db.openSegment(gen, isNewest, torn[gen])
		if err != nil {
			return err
		}
		if sf == nil {
			continue // a torn creation, removed
		}
		opened = append(opened, sf)
		if isNewest {
			newest = sf
		}
	}
	for _, sf := range opened {
		if _, err := db.replaySegmentSafe(sf, torn[sf.gen], segment.HeaderSize, segment.HeaderSize); err != nil {
			return err
		}
	}
	return db.finishRecovery(newest)
}

// recoverFrom opens the segments after loading snapshot meta into the index
// and replays the log from its replay position. It returns false (and no
// error) if the log turns out not to reach the snapshot's durable position,
// in which case the caller replays everything instead.
func (db *DB) recoverFrom(meta *snapMeta, gens []uint64, onDisk map[uint64]int64) (bool, error) {
	inTable := map[uint64]snapSeg{}
	for _, s := range meta.segs {
		inTable[s.gen] = s
	}
	db.nextSeq = max(db.nextSeq, meta.nextSeq)
	db.nextGen = max(db.nextGen, meta.nextGen)
	var open []uint64
	for _, gen := range gens {
		_, listed := inTable[gen]
		if !listed && gen < meta.acct.gen && db.opts.ReadOnly {
			continue // compacted away; removing it is a writer's job
		}
		if !listed && gen < meta.acct.gen {
			// Removed by compaction before the snapshot; the removal did not
			// reach the disk. Every live record it had was copied. Only a
			// segment of this database is removed: a file copied in from
			// elsewhere is refused, never deleted.
			if err := db.checkOwnSegment(gen); err != nil {
				return false, err
			}
			db.opts.Logger.Warn("marlin: removing a compacted segment left behind", "file", segment.FileName(gen))
			if err := db.fs.Remove(filepath.Join(db.dir, segment.FileName(gen))); err != nil {
				return false, fmt.Errorf("marlin: %w", err)
			}
			continue
		}
		open = append(open, gen)
	}
	if !db.opts.ReadOnly {
		if err := db.fs.SyncDir(db.dir); err != nil {
			return false, fmt.Errorf("marlin: %w", err)
		}
	}
	// Open and register every segment before replaying any record: the
	// snapshot's fuzzy copy may hold entries that point into segments after
	// the replay position, and replayUnit must be able to read them (a
	// location in a segment not yet open would look stale, and the older
	// record replayed before it would become a second entry for its key).
	var newest *segFile
	torn := tornTailSegments(open, onDisk)
	var opened []*segFile
	for i, gen := range open {
		db.nextGen = max(db.nextGen, gen+1)
		isNewest := i == len(open)-1
		sf, err := db.openSegment(gen, isNewest, torn[gen])
		if err != nil {
			return false, err
		}
		ts, listed := inTable[gen]
		if sf == nil {
			if listed {
				return false, nil
			}
			continue
		}
		if listed {
			if sf.id != ts.id {
				return false, nil
			}
			sf.live.Store(ts.live)
			sf.ttlMin.Store(ts.ttlMin)
			sf.tomb.Store(ts.tomb)
			sf.tombMaxShadow.Store(ts.tombMaxShadow)
		}
		if isNewest {
			newest = sf
		}
		opened = append(opened, sf)
	}
	for _, sf := range opened {
		gen := sf.gen
		if gen < meta.replay.gen {
			continue
		}
		from, acct := int64(segment.HeaderSize), int64(segment.HeaderSize)
		if gen == meta.replay.gen {
			from = meta.replay.off
		}
		if gen < meta.acct.gen {
			acct = segment.MaxSegmentSize // nothing to count: the table has it
		} else if gen == meta.acct.gen {
			acct = meta.acct.off
		}
		end, err := db.replaySegmentSafe(sf, torn[gen], from, acct)
		if err != nil {
			return false, err
		}
		if gen == meta.acct.gen && end < meta.acct.off {
			return false, nil
		}
	}
	db.st.snapshotLoaded.Store(true)
	return true, db.finishRecovery(newest)
}

// finishRecovery derives dead bytes and starts the active segment.
func (db *DB) finishRecovery(newest *segFile) error {
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			sf.dead.Store(sf.flushed.Load() - segment.HeaderSize - sf.live.Load() - sf.tomb.Load())
		}
	}
	return db.startActive(newest)
}

// checkOwnSegment reads the header of the segment file of generation gen
// and reports an ErrCorrupt if it is not a segment of this database with
// that generation.
func (db *DB) checkOwnSegment(gen uint64) error {
	name := filepath.Join(db.dir, segment.FileName(gen))
	f, err := db.fs.Open(name)
	if err != nil {
		return fmt.Errorf("marlin: open segment: %w", err)
	}
	defer f.Close()
	hb := make([]byte, segment.HeaderSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		return &segment.CorruptError{File: name, Reason: fmt.Sprintf("cannot read the segment header: %v", err)}
	}
	hdr, err := segment.DecodeHeader(hb)
	switch {
	case err != nil:
		return segment.WithFile(err, name)
	case db.isForeignSegment(hdr):
		return &segment.CorruptError{File: name, Reason: fmt.Sprintf(
			"segment belongs to another database (tag %#08x; this database, %s, has tag %#08x): "+
				"move the file out of the directory", hdr.DBTag, db.meta.id, db.meta.id.Tag())}
	case hdr.Generation != gen:
		return &segment.CorruptError{File: name, Reason: fmt.Sprintf("header says generation %d", hdr.Generation)}
	}
	return nil
}

// openSegment opens and maps the segment file of generation gen. For the
// newest segment it returns nil, nil when the file is a torn creation (too
// short for a header, or an all-zero header), after removing it.
func (db *DB) openSegment(gen uint64, newest, mayTruncate bool) (*segFile, error) {
	name := filepath.Join(db.dir, segment.FileName(gen))
	open := db.fs.Open
	if (newest || mayTruncate) && !db.opts.ReadOnly {
		open = db.fs.OpenReadWrite
	}
	f, err := open(name)
	if err != nil {
		return nil, fmt.Errorf("marlin: open segment: %w", err)
	}
	sf := &segFile{gen: gen, name: name, f: f}
	fail := func(err error) (*segFile, error) {
		_ = sf.close()
		return nil, err
	}
	size, err := f.Size()
	if err != nil {
		return fail(fmt.Errorf("marlin: stat %s: %w", name, err))
	}
	hb := make([]byte, segment.HeaderSize)
	if size >= segment.HeaderSize {
		if _, err := f.ReadAt(hb, 0); err != nil {
			return fail(fmt.Errorf("marlin: read %s: %w", name, err))
		}
	}
	// A crash during creation leaves at most the header's bytes, unsynced:
	// a short file or zeros. Records are appended only after the header
	// is fsynced, so a zeroed header followed by anything but zeros is
	// damage to a segment that held data, not a torn creation: it falls
	// through to the header check below and is reported.
	// A segment the snapshot lists had its header fsynced: it is never a
	// torn creation, whatever its bytes now say.
	if newest && db.provenSize[gen] == 0 && (size < segment.HeaderSize || isZero(hb) && zeroFrom(f, segment.HeaderSize, size)) {
		_ = sf.close()
		if db.opts.ReadOnly {
			db.opts.Logger.Warn("marlin: ignoring segment torn at creation", "file", name, "size", size)
			return nil, nil
		}
		db.opts.Logger.Warn("marlin: removing segment torn at creation", "file", name, "size", size)
		if err := db.fs.Remove(name); err != nil {
			return nil, fmt.Errorf("marlin: remove %s: %w", name, err)
		}
		if err := db.fs.SyncDir(db.dir); err != nil {
			return nil, fmt.Errorf("marlin: sync %s: %w", db.dir, err)
		}
		return nil, nil
	}
	hdr, err := segment.DecodeHeader(hb)
	switch {
	case err != nil:
		return fail(segment.WithFile(err, name))
	case db.isForeignSegment(hdr):
		return fail(&segment.CorruptError{File: name, Reason: fmt.Sprintf(
			"segment belongs to another database (tag %#08x; this database, %s, has tag %#08x): "+
				"move the file out of the directory", hdr.DBTag, db.meta.id, db.meta.id.Tag())})
	case hdr.Generation != gen:
		return fail(&segment.CorruptError{File: name, Reason: fmt.Sprintf("header says generation %d", hdr.Generation)})
	case db.segs[hdr.ID].Load() != nil:
		return fail(&segment.CorruptError{File: name, Reason: fmt.Sprintf("segment id %d used twice", hdr.ID)})
	case size > segment.MaxSegmentSize:
		return fail(&segment.CorruptError{File: name, Offset: segment.MaxSegmentSize, Reason: "segment larger than a location can address"})
	}
	sf.id = hdr.ID
	mapLen := size
	if newest && !db.opts.ReadOnly {
		mapLen = max(size, db.opts.SegmentSize)
	}
	if sf.m, err = f.Map(int(mapLen)); err != nil {
		return fail(fmt.Errorf("marlin: map %s: %w", name, err))
	}
	sf.data = sf.m.Bytes()
	db.adviseSeg(sf, vfs.AccessRandom)
	sf.flushed.Store(size)
	sf.durable.Store(size)
	sf.marked = size
	db.segs[sf.id].Store(sf)
	db.usedIDs++
	return sf, nil
}

// isZero reports whether b holds only zeros.
func isZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

// zeroFrom reports whether bytes [from, size) of f are all zero (a read
// error counts as not zero, so the segment is reported, never removed).
func zeroFrom(f vfs.File, from, size int64) bool {
	buf := make([]byte, min(size-from, 64<<10))
	for off := from; off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil || !isZero(buf[:n]) {
			return false
		}
		off += n
	}
	return true
}

// replaySegment feeds a segment's committed records from offset from on to
// the index, counting live bytes for records at acct or later, and, if its
// tail may be torn (mayBeTorn; see tornTailSegments), truncates a torn
// tail. It returns where the valid log ends. Damage below what a sync mark
// or the snapshot's recorded size proves fsynced is never a torn tail
// (fsyncedProof).
func (db *DB) replaySegment(sf *segFile, mayBeTorn bool, from, acct int64) (int64, error) {
	size := sf.flushed.Load()
	data := sf.data[:size]
	var unitErr error // an error applying records, not decoding them
	end, err := segment.ScanFrom(data, sf.gen, db.lim, from, func(es []segment.Entry) error {
		unitErr = db.replayUnit(sf, es, acct)
		return unitErr
	})
	if unitErr != nil {
		// Never a torn tail: the records decoded, and what failed (an
		// unreadable older record, say) is elsewhere.
		return end, unitErr
	}
	if db.opts.Salvage && err != nil {
		end, err = db.salvageScan(sf, data, end, err, acct) // read-only salvage: skip damage (salvage.go)
	}
	if err != nil && (!mayBeTorn || !errors.Is(err, ErrCorrupt)) {
		return end, segment.WithFile(err, sf.name)
	}
	if err != nil {
		if _, why := fsyncedProof(data, sf.gen, db.lim, end, db.provenSize[sf.gen]); why != "" {
			return end, fmt.Errorf("%w (%s)", segment.WithFile(err, sf.name), why)
		}
		db.opts.Logger.Warn("marlin: truncating torn tail", "file", sf.name,
			"offset", end, "dropped", size-end, "reason", segment.WithFile(err, sf.name))
		db.st.truncated.Add(size - end)
	}
	if end > size && !mayBeTorn {
		// Only a torn write can end a file inside a record's zero padding
		// (records are appended whole). Every other segment was fsynced
		// whole, so it has been cut short since, maybe losing records
		// after the cut: damage, reported like any other.
		return end, &segment.CorruptError{File: sf.name, Offset: size,
			Reason: "segment ends inside the padding of a record (cut short after it was synced)"}
	}
	if end != size && db.opts.ReadOnly {
		// Leave the file alone; just never read past the valid end.
		sf.flushed.Store(min(end, size))
		return end, nil
	}
	if end != size {
		if err := sf.f.Truncate(end); err != nil {
			return end, fmt.Errorf("marlin: truncate %s: %w", sf.name, err)
		}
		if err := sf.f.Sync(); err != nil {
			return end, fmt.Errorf("marlin: fsync %s: %w", sf.name, err)
		}
		sf.flushed.Store(end)
		sf.durable.Store(end)
		sf.marked = end
	}
	return end, nil
}

// replayed is what replay found for a key in the index: the entry's
// location, its record's size and sequence number.
type replayed struct {
	loc  uint64
	size int
	seq  uint64
}

// replayMatch returns a match function for key that records the entry it
// claims in *m, and in *bad the first candidate whose record cannot be read
// (damage, not a stale location). Such a candidate is never taken for
// another key: the caller fails the replay if no candidate is the key, as
// the write path does (probeLocked), since the unreadable record may be the
// key's and a second entry for one key must never be made.
func (db *DB) replayMatch(key []byte, m *replayed, bad *error) func(uint64) bool {
	return func(l uint64) bool {
		or, locked, err := db.recordAt(l)
		if locked {
			db.tailMu.RUnlock() // not during recovery (no tail yet)
		}
		if err != nil {
			if !errors.Is(err, errStale) && *bad == nil {
				*bad = err
			}
			return false
		}
		if !bytes.Equal(or.Key, key) {
			return false
		}
		*m = replayed{l, segment.Size(len(or.Key), len(or.Value), or.Expiry != 0), or.Seq}
		return true
	}
}

// replayUnit applies committed records: the highest sequence number wins.
// Live bytes are counted for records at offset acct or later.
//
// Replay runs in log order (segments by generation, records by offset),
// and the log order is the sequence order: every write takes its sequence
// number under db.mu as it is appended, and compaction re-appends copies
// with fresh numbers (see compact.go). So a record replayed after another
// of its key is always the newer one, except against entries loaded from
// a snapshot, whose fuzzy copy may already hold a later record; the
// sequence comparison settles those. A tombstone therefore never needs an
// index entry of its own (no older record of its key can come later in the
// replay): it removes the key's entry if that entry is older, and occupies
// no slot. An expired put (judged with db.now) is replayed the same way
// from the accounting position on. The index thus never holds more entries
// than the write path had at some point, and no acknowledged history (of
// deletes, or of expiries the expirer reclaimed) can overflow a shard.
func (db *DB) replayUnit(sf *segFile, es []segment.Entry, acct int64) error {
	db.st.replayed.Add(int64(len(es)))
	now := db.now()
	for i := range es {
		e := &es[i]
		r := &e.Rec
		if r.Seq >= db.nextSeq {
			db.nextSeq = r.Seq + 1
		}
		if r.Expiry != 0 {
			sf.noteExpiry(r.Expiry)
		}
		loc := segment.Loc(sf.id, e.Off)
		h := db.hash(r.Key)
		var old replayed
		var bad error
		var found, replaced bool
		// An expired put is replayed like a tombstone (it shadows older
		// versions and is absent itself), except before the accounting
		// position, where the snapshot's figures count it as indexed, and
		// for a key the base holds, whose expired put stays indexed to
		// hide it (base.go).
		absent := r.Kind == segment.KindDelete || r.Expiry != 0 && r.Expiry <= now && e.Off >= acct && !db.needsMaskLocked(r.Key)
		if absent {
			found = db.ix.Lookup(h, db.replayMatch(r.Key, &old, &bad))
			if found && r.Seq > old.seq {
				replaced = db.ix.DeleteExact(h, old.loc)
			}
		} else {
			var err error
			match := db.replayMatch(r.Key, &old, &bad)
			_, found, replaced, err = db.ix.Put(h, loc, func(l uint64) (bool, bool) {
				if !match(l) {
					return false, false
				}
				return true, r.Seq > old.seq
			})
			if err != nil {
				return fmt.Errorf("marlin: index: %w", err)
			}
		}
		if r.Kind == segment.KindDelete && e.Off >= acct {
			// Needed until what it shadows is gone (tombstone.go).
			sf.noteTomb(e.Size, tombShadow(r, sf.gen))
		}
		if bad != nil && !found {
			return fmt.Errorf("marlin: replaying %s at offset %d: an older record of the key cannot be read: %w", sf.name, e.Off, bad)
		}
		if found && !replaced || e.Off < acct {
			continue // older than the entry, or the snapshot's figures include it
		}
		if found {
			oid, _ := segment.SplitLoc(old.loc)
			db.segs[oid].Load().live.Add(-int64(old.size))
		}
		if !absent {
			sf.live.Add(int64(e.Size))
		}
	}
	return nil
}

// startActive makes the newest segment the active one if it has room, and
// otherwise creates a new segment. The newest segment is fsynced first, so
// everything recovery kept counts as durable.
func (db *DB) startActive(newest *segFile) error {
	if db.opts.ReadOnly {
		for i := range db.segs {
			if sf := db.segs[i].Load(); sf != nil {
				sf.sealed.Store(true)
			}
		}
		return nil
	}
	if newest != nil {
		if err := newest.f.Sync(); err != nil {
			return fmt.Errorf("marlin: fsync %s: %w", newest.name, err)
		}
		if newest.flushed.Load()+int64(segment.Size(db.opts.MaxKeySize, db.opts.MaxValueSize, true)) <= db.opts.SegmentSize {
			db.active = newest
			db.tail.start = newest.flushed.Load()
			return nil
		}
		newest.sealed.Store(true)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	db.idFloor = idForOpen // compaction keeps the last id (see idReserve)
	sf, err := db.createSegmentLocked()
	db.idFloor = idForPut
	if errors.Is(err, ErrFull) && newest != nil {
		// Every id but compaction's is in use: append to the newest
		// segment while it has room; a write that does not fit rolls and
		// is refused or reclaims space.
		newest.sealed.Store(false)
		db.active = newest
		db.tail.start = newest.flushed.Load()
		db.opts.Logger.Warn("marlin: the log is full: the newest segment stays active; compact to reclaim space", "dir", db.dir)
		return nil
	}
	if err != nil {
		return err
	}
	db.active = sf
	db.tail.start = segment.HeaderSize
	return nil
}
