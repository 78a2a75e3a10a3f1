package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// VerifyProblem is one thing Verify found wrong.
type VerifyProblem struct {
	File   string // file name, or "" for the index
	Offset int64  // byte offset in File, or -1
	What   string // what is wrong, in words
	// TornTail marks damage that a writable Open cuts off by itself (see
	// LogEnd.TornTail): past the end of the valid log of the newest
	// segment, where no sync mark or snapshot proves anything was fsynced.
	TornTail bool
	// Index marks a problem of the index snapshot (or of the index built
	// from it), not of the log: Repair's rebuild fixes it.
	Index bool
}

// String formats the problem as "FILE at offset N: what" (or without the
// parts it lacks).
func (p VerifyProblem) String() string {
	if p.Offset >= 0 {
		return fmt.Sprintf("%s at offset %d: %s", p.File, p.Offset, p.What)
	}
	if p.File != "" {
		return fmt.Sprintf("%s: %s", p.File, p.What)
	}
	return p.What
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Segments     int             // segment files checked
	Records      int64           // records that decoded
	Keys         int64           // live keys after a full replay of the log (expired ones not counted)
	SnapshotUsed bool            // the index snapshot was loaded and compared with the replay
	Base         string          // the base bundle, checked whole (every section and record CRC); "": none
	Problems     []VerifyProblem // everything found wrong; none means the database is sound
}

// OK reports whether nothing was found wrong.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Verify checks the database in dir thoroughly: every record of every
// segment decodes (checksum, lengths), the index a normal Open builds
// (from the snapshot, if there is one) holds exactly the entries a full
// replay of the log gives, and every entry points at a record of a key
// with that hash. It opens the directory read-only (twice), so it refuses a
// directory a writer holds and never modifies anything. opts may be nil;
// its FS, Clock (for expiry), IndexReserve and Logger are used (decoding
// limits come from the format, never from the options).
func Verify(dir string, opts *Options) (*VerifyReport, error) {
	return VerifyWithProgress(dir, opts, nil)
}

// VerifyWithProgress is Verify telling progress (if not nil), from the
// verifying goroutine, what it does: the phase ("segments", "full
// replay", "snapshot", "base bundle") and, for segments, how many of how
// many it has checked.
func VerifyWithProgress(dir string, opts *Options, progress func(phase string, done, total int64)) (*VerifyReport, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	o.ReadOnly = true
	if opts == nil || opts.Logger == nil {
		o.Logger = discardLogger
	}
	rep := &VerifyReport{}
	if err := verifySegments(dir, &o, rep, progress); err != nil {
		return rep, err
	}
	progress("full replay", 0, 0)

	full := o
	full.DisableSnapshots = true
	fdb, err := Open(dir, &full)
	if errors.Is(err, ErrCorrupt) {
		if len(rep.Problems) == 0 {
			// Not found by the segment scan (a damaged or missing identity
			// file, say): report what Open found.
			rep.Problems = append(rep.Problems, VerifyProblem{Offset: -1, What: err.Error()})
		}
		return rep, nil // otherwise already reported by the segment scan
	}
	if err != nil {
		return rep, err
	}
	defer fdb.Close()
	rep.Keys = fdb.ix.Len()
	if err := fdb.ix.Check(); err != nil {
		rep.Problems = append(rep.Problems, VerifyProblem{Offset: -1, What: "replayed index: " + err.Error(), Index: true})
	}
	fdb.verifyEntries(rep)
	fdb.verifyAccounting(rep, "a full replay")
	if b := fdb.base.Load(); b != nil {
		progress("base bundle", 0, 0)
		rep.Base = b.path
		if err := b.r.Verify(); err != nil {
			rep.Problems = append(rep.Problems, VerifyProblem{File: b.path, Offset: -1, What: "base bundle: " + err.Error()})
		}
	}

	progress("snapshot", 0, 0)
	sdb, err := Open(dir, &o)
	var ce *segment.CorruptError
	if errors.As(err, &ce) {
		// The snapshot proves fsynced data that the log lacks (proven.go):
		// damage the segment scan may have taken for a torn tail.
		rep.Problems = append(rep.Problems, VerifyProblem{File: ce.File, Offset: ce.Offset, What: err.Error()})
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	defer sdb.Close()
	rep.SnapshotUsed = sdb.st.snapshotLoaded.Load()
	if rep.SnapshotUsed {
		if err := sdb.ix.Check(); err != nil {
			rep.Problems = append(rep.Problems, VerifyProblem{Offset: -1, What: "snapshot index: " + err.Error(), Index: true})
		}
		compareIndexes(sdb, fdb, rep)
		sdb.verifyAccounting(rep, "the index snapshot and the log after it")
	}
	return rep, nil
}

// verifySegments decodes every record of every segment file. Damage is
// marked as a torn tail as Open decides it (segFacts.end): when a writable
// Open would cut it off (or remove a segment torn at creation) by itself.
func verifySegments(dir string, o *Options, rep *VerifyReport, progress func(string, int64, int64)) error {
	segs, err := segmentFacts(o.FS, dir)
	if err != nil {
		return fmt.Errorf("marlin: verify: %w", err)
	}
	for i, s := range segs {
		progress("segments", int64(i), int64(len(segs)))
		rep.Segments++
		data, closeFn, err := readWhole(o.FS, s.name)
		if err != nil {
			return fmt.Errorf("marlin: verify: %w", err)
		}
		if err := verifySegment(s, data, rep); err != nil {
			// The file could not be read (an I/O error, or truncated while
			// mapped): report it like damage and go on with the others.
			rep.Problems = append(rep.Problems, VerifyProblem{File: s.name, Offset: -1, What: err.Error()})
		}
		closeFn()
	}
	return nil
}

// verifySegment reports the damage in one segment, data being its
// mapping. A memory fault reading it is returned as an ErrIO error.
func verifySegment(s segFacts, data []byte, rep *VerifyReport) (err error) {
	defer catchMappedFault(debug.SetPanicOnFault(true), s.name, data, &err)
	e := s.end(data) // what Open finds: nil if intact
	h, herr := segment.DecodeHeader(data)
	switch {
	case herr != nil:
		rep.Problems = append(rep.Problems, VerifyProblem{File: s.name, Offset: 0, What: corruptReason(herr),
			TornTail: e != nil && e.created && e.TornTail})
		return nil
	case h.Generation != s.gen:
		rep.Problems = append(rep.Problems, VerifyProblem{File: s.name, Offset: 0, What: fmt.Sprintf("header says generation %d", h.Generation)})
	}
	probs := segment.Check(data, s.gen, segment.FormatLimits, func(int64, *segment.Record, int) { rep.Records++ })
	for _, p := range probs {
		// Everything from the end of the valid log on is what Open cuts.
		torn := e != nil && e.TornTail && p.Offset >= e.End
		what := p.Reason
		if torn {
			what = "torn tail (never-fsynced data; " + what + ")"
		}
		rep.Problems = append(rep.Problems, VerifyProblem{File: s.name, Offset: p.Offset, What: what, TornTail: torn})
	}
	return nil
}

// readWhole maps a whole file read-only.
func readWhole(fs vfs.FS, name string) ([]byte, func(), error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, nil, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	m, err := f.Map(int(size))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return m.Bytes(), func() { m.Close(); f.Close() }, nil
}

// verifyEntries checks that every index entry points at a put record whose
// key hashes to the entry's shard and fingerprint.
func (db *DB) verifyEntries(rep *VerifyReport) {
	var locs []uint64
	for sn := 0; sn < index.NumShards; sn++ {
		locs = db.ix.ShardSlots(sn, locs[:0])
		for _, s := range locs {
			loc := s & index.LocMask
			r, locked, err := db.recordAt(loc)
			if locked {
				db.tailMu.RUnlock()
			}
			id, off := segment.SplitLoc(loc)
			file := ""
			if sf := db.segs[id].Load(); sf != nil {
				file = sf.name
			}
			if err != nil {
				rep.Problems = append(rep.Problems, VerifyProblem{File: file, Offset: off, What: "index entry: " + err.Error()})
				continue
			}
			hsn, fp := index.Split(db.hash(r.Key))
			if r.Kind != segment.KindPut || hsn != sn || index.Slot(fp, loc) != s {
				rep.Problems = append(rep.Problems, VerifyProblem{File: file, Offset: off,
					What: fmt.Sprintf("index entry (shard %d) points at a record of kind %d for key %q that does not hash to it", sn, r.Kind, r.Key)})
			}
		}
	}
}

// compareIndexes reports entries that differ between the snapshot-loaded
// index (a) and the full replay (b).
func compareIndexes(a, b *DB, rep *VerifyReport) {
	var sa, sb []uint64
	for sn := 0; sn < index.NumShards; sn++ {
		sa, sb = a.ix.ShardSlots(sn, sa[:0]), b.ix.ShardSlots(sn, sb[:0])
		slices.Sort(sa)
		slices.Sort(sb)
		i, j := 0, 0
		for i < len(sa) || j < len(sb) {
			switch {
			case j == len(sb) || i < len(sa) && sa[i] < sb[j]:
				// A full replay skips a put that has expired (replayUnit);
				// the snapshot may still hold its entry. Both read the key
				// as absent.
				if !a.expiredAt(sa[i]) {
					rep.Problems = append(rep.Problems, a.entryProblem(sa[i], "the snapshot's index has an entry the log does not support (stale entry)"))
				}
				i++
			case i == len(sa) || sb[j] < sa[i]:
				// An expired key's entry, removed by the expirer or by
				// compaction before the snapshot was written, comes back
				// in a full replay (no tombstone is written for it); both
				// indexes read the key as absent.
				if !b.expiredAt(sb[j]) {
					rep.Problems = append(rep.Problems, b.entryProblem(sb[j], "a live key is missing from the snapshot's index"))
				}
				j++
			default:
				i, j = i+1, j+1
			}
		}
	}
}

// expiredAt reports whether the index entry slot points at a record that
// has expired.
func (db *DB) expiredAt(slot uint64) bool {
	r, locked, err := db.recordAt(slot & index.LocMask)
	if locked {
		defer db.tailMu.RUnlock()
	}
	return err == nil && r.Expiry != 0 && r.Expiry <= db.now()
}

func (db *DB) entryProblem(slot uint64, what string) VerifyProblem {
	id, off := segment.SplitLoc(slot & index.LocMask)
	file := ""
	if sf := db.segs[id].Load(); sf != nil {
		file = sf.name
	}
	return VerifyProblem{File: file, Offset: off, What: what, Index: true}
}

// SnapshotInfo describes an index snapshot file.
type SnapshotInfo struct {
	File     string    // the snapshot file's path
	Created  time.Time // when it was written
	Entries  uint64    // index entries it holds
	Segments int       // segments it lists
	// DBID is the id of the database that wrote the snapshot; Open ignores
	// a snapshot whose id is not its own (DB.ID).
	DBID DBID
	// The snapshot's index covers the log up to Durable; Open replays from
	// Replay (segment generation and offset).
	ReplayGen     uint64 // generation of the segment Open replays from
	DurableGen    uint64 // generation of the segment the index covers up to
	ReplayOffset  int64  // offset in ReplayGen where the replay starts
	DurableOffset int64  // offset in DurableGen up to which the log was fsynced
}

// ReadSnapshotInfo reads the header and trailer of the newest snapshot in
// dir (without loading it). It returns nil and no error if there is none,
// and an error wrapping ErrCorrupt, naming the file and offset, if the
// header, trailer or footer is damaged.
func ReadSnapshotInfo(fs vfs.FS, dir string) (*SnapshotInfo, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, err
	}
	newest, found := newestSnapshot(names)
	if !found {
		return nil, nil
	}
	s, err := openSnapshot(fs, filepath.Join(dir, snapName(newest)))
	if err != nil {
		return nil, err
	}
	_ = s.f.Close()
	h, m := s.hdr, s.meta
	return &SnapshotInfo{File: s.name, Created: time.UnixMilli(h.createdMs), DBID: h.id, Entries: m.entries, Segments: len(m.segs),
		ReplayGen: m.replay.gen, ReplayOffset: m.replay.off, DurableGen: m.acct.gen, DurableOffset: m.acct.off}, nil
}

// Repair makes a directory with a torn tail or a bad index snapshot whole
// again: it deletes the index snapshots, then opens the directory for
// writing, which truncates a torn tail and rebuilds the index by replaying
// the whole log, and closes it, which writes a fresh snapshot. Damage in
// the middle of the log cannot be repaired this way: Repair then returns
// the ErrCorrupt that names it (the snapshots are gone, which only costs a
// slower Open).
func Repair(dir string, opts *Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	if o.ReadOnly {
		return ErrReadOnly
	}
	o.dropSnapshots = true
	db, err := Open(dir, &o)
	if err != nil {
		return err
	}
	return db.Close()
}
