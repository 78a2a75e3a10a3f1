package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Proof of durability from the index snapshot (issue 9, item 10).
//
// A snapshot's segment table records each segment's size at the
// snapshot's accounting position, and the snapshot is written only after
// the active segment was fsynced up to that position (writeSnapshot). So
// the newest readable snapshot proves that every listed segment held at
// least its recorded size of fsynced data. Recovery uses that proof even
// when the snapshot cannot be used for anything else (a listed segment is
// gone, its entries are damaged):
//
//   - damage below a segment's proven size is corruption (ErrCorrupt naming
//     the file and offset), never a torn tail to truncate;
//   - a segment shorter than its proven size lost fsynced data: corruption
//     too, not a stale snapshot that a full replay would then "repair" by
//     truncating acknowledged records.
//
// A normal Open therefore never discards fsynced data silently; cutting it
// off is Repair's job, which says what it drops.

// provenSizes returns the segment sizes meta proves were fsynced, by
// generation.
func (m *snapMeta) provenSizes() map[uint64]int64 {
	proven := make(map[uint64]int64, len(m.segs))
	for _, s := range m.segs {
		proven[s.gen] = s.size
	}
	return proven
}

// checkProvenSizes fails with ErrCorrupt if a segment file on disk is
// shorter than the size the snapshot proves was fsynced. onDisk maps
// generations to file sizes.
func (db *DB) checkProvenSizes(onDisk map[uint64]int64) error {
	for gen, proven := range db.provenSize {
		if size, ok := onDisk[gen]; ok && size < proven {
			return &segment.CorruptError{File: filepath.Join(db.dir, segment.FileName(gen)), Offset: size,
				Reason: fmt.Sprintf("segment is %d bytes but the index snapshot shows %d bytes had been fsynced", size, proven)}
		}
	}
	return nil
}

// fsyncedProof returns how far the data of segment gen (data: the whole
// file) is proven to have been fsynced, for a segment whose valid records
// end at end: by a valid sync mark after end, or by snapSize, the size the
// newest index snapshot recorded for it (0: none). why says what proves
// data past end, in words for an error message, or is "" if nothing does:
// the bytes after end may then be a torn write. Recovery (replaySegment)
// and LogEnds decide with it.
func fsyncedProof(data []byte, gen uint64, lim segment.Limits, end, snapSize int64) (proven int64, why string) {
	claim := segment.SyncedClaim(data, gen, lim, end)
	switch {
	case claim > end:
		why = fmt.Sprintf("a sync mark shows the data up to offset %d had been fsynced", claim)
	case snapSize > end:
		why = fmt.Sprintf("the index snapshot shows the data up to offset %d had been fsynced", snapSize)
	}
	return max(claim, snapSize), why
}

// LogEnd says where the valid log ends in one segment that recovery finds
// damaged: its header or records stop decoding before the end of its
// file, it ends inside the zero padding of its last record, or it is
// shorter than the newest snapshot proves it was. Repair plans its cut
// from it (PlanRepair).
type LogEnd struct {
	File string // the newest segment's path
	Gen  uint64 // its generation
	Size int64  // the file's size
	// End is where the valid log ends: the end of the last record (of the
	// last committed batch) before the damage; a cut at End keeps
	// everything before it. It is 0 if the header is damaged, and beyond
	// Size if the file ends inside the zero padding of its last record
	// (a cut there restores the padding).
	End int64
	// Reason says why decoding stopped, or why the segment is damaged
	// although its records decode.
	Reason string
	// Proven is the size that the newest index snapshot or a sync mark
	// after End shows had been fsynced (0: nothing proves any). End <
	// Proven means a cut at End drops fsynced, acknowledged data.
	Proven int64
	// TornTail reports that a writable Open truncates this segment at End
	// by itself (a possibly torn tail of the newest segment, which nothing
	// proves was fsynced), or, with End 0, removes it (the newest segment,
	// torn at its creation); otherwise Open fails with ErrCorrupt.
	TornTail bool
}

// LogEnds scans every segment of dir, without modifying anything, and
// returns where the valid log ends in each one that recovery would find
// damaged or short, oldest first. It decides as Open does (which segments
// may have a torn tail, what the snapshot and the sync marks prove). opts
// may be nil; only its FS matters.
func LogEnds(dir string, opts *Options) ([]LogEnd, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var ends []LogEnd
	err = scanLogEnds(o.FS, dir, func(e *segEnd, _ []byte) error {
		ends = append(ends, e.LogEnd)
		return nil
	})
	return ends, err
}

// segEnd is a LogEnd with what a repair plan needs besides.
type segEnd struct {
	LogEnd
	// badHeader: the header does not decode, or names another generation
	// or another database. Open fails, and no cut repairs it.
	badHeader bool
	// created: the newest segment, torn at its creation (shorter than a
	// header, or all zeros). Open removes it unless the snapshot proves it
	// held data.
	created bool
	// damage is where decoding stopped: the first bad record, or End for a
	// batch without its commit record (Size if every record decodes).
	damage int64
}

// scanLogEnds maps every segment of dir, oldest first, and calls visit for
// each one that recovery would find damaged or short, with the file's
// bytes (valid only during the call). A memory fault reading them is
// returned as an ErrIO error.
func scanLogEnds(fs vfs.FS, dir string, visit func(e *segEnd, data []byte) error) error {
	segs, err := segmentFacts(fs, dir)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if err := s.visit(fs, visit); err != nil {
			return err
		}
	}
	return nil
}

// segFacts is what recovery knows about a segment before reading it.
type segFacts struct {
	name   string
	gen    uint64
	newest bool   // the newest segment (only it can be torn at creation)
	torn   bool   // its tail may be torn (tornTailSegments)
	proven int64  // the size the snapshot proves was fsynced (0: none)
	tag    uint32 // the database's tag (0: unknown)
}

// segmentFacts lists the segments of dir, oldest first, with what recovery
// knows about each before reading it.
func segmentFacts(fs vfs.FS, dir string) ([]segFacts, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, err
	}
	gens, onDisk, err := listSegments(fs, dir, names)
	if err != nil {
		return nil, err
	}
	// Only a snapshot of this database proves anything, and only a segment
	// with another database's tag is foreign: without a readable identity
	// file nothing is known (and Open fails on the missing file anyway).
	var proven map[uint64]int64
	var tag uint32
	if m, err := readMeta(fs, dir); err == nil {
		proven = newestProvenSizes(fs, dir, names, m.id)
		tag = m.id.Tag()
	}
	torn := tornTailSegments(gens, onDisk)
	segs := make([]segFacts, len(gens))
	for i, gen := range gens {
		segs[i] = segFacts{name: filepath.Join(dir, segment.FileName(gen)), gen: gen, newest: i == len(gens)-1,
			torn: torn[gen], proven: proven[gen], tag: tag}
	}
	return segs, nil
}

// visit maps the segment and calls visit if recovery would find it
// damaged or short.
func (s segFacts) visit(fs vfs.FS, visit func(e *segEnd, data []byte) error) (err error) {
	data, closeFn, err := readWhole(fs, s.name)
	if err != nil {
		return err
	}
	defer closeFn()
	defer catchMappedFault(debug.SetPanicOnFault(true), s.name, data, &err)
	if e := s.end(data); e != nil {
		return visit(e, data)
	}
	return nil
}

// end works out what recovery finds in the segment, data being the whole
// file, as openSegment, checkProvenSizes and replaySegment decide it; nil
// if the segment is intact.
func (s segFacts) end(data []byte) *segEnd {
	size := int64(len(data))
	e := &segEnd{LogEnd: LogEnd{File: s.name, Gen: s.gen, Size: size, Proven: s.proven}, damage: size}
	header := func(reason string) *segEnd {
		e.badHeader, e.damage, e.Reason = true, 0, reason
		return e
	}
	h, herr := segment.DecodeHeader(data)
	switch {
	case s.newest && s.proven == 0 && (size < segment.HeaderSize || isZero(data)):
		e.created, e.damage, e.TornTail = true, 0, true
		e.Reason = "torn at creation (shorter than a header, or all zeros)"
		return e
	case herr != nil:
		return header("segment header: " + corruptReason(herr) +
			" (the segment's records cannot be trusted; restore it from a backup)")
	case s.tag != 0 && h.DBTag != s.tag:
		return header(fmt.Sprintf("segment belongs to another database (tag %#08x; this database has tag %#08x): "+
			"move the file out of the directory", h.DBTag, s.tag))
	case h.Generation != s.gen:
		return header(fmt.Sprintf("header says generation %d", h.Generation))
	}
	lim := segment.FormatLimits // as Open decodes
	end, serr := segment.Scan(data, s.gen, lim, func([]segment.Entry) error { return nil })
	e.End = end
	var ce *segment.CorruptError
	switch {
	case errors.As(serr, &ce):
		e.damage, e.Reason = ce.Offset, ce.Reason
		var why string
		e.Proven, why = fsyncedProof(data, s.gen, lim, end, s.proven)
		e.TornTail = s.torn && why == "" // (nothing proven past end <= size)
	case size < s.proven:
		e.Reason = fmt.Sprintf("segment is %d bytes but the index snapshot shows %d bytes had been fsynced", size, s.proven)
	case end > size:
		// Only a torn write ends a file inside a record's padding.
		e.Reason = "the file ends inside the padding of its last record"
		e.TornTail = s.torn
	default:
		return nil
	}
	return e
}

// corruptReason is a CorruptError's reason, or the error's text.
func corruptReason(err error) string {
	var ce *segment.CorruptError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return err.Error()
}

// newestProvenSizes returns the segment sizes that the newest snapshot in
// dir (names is its listing) proves were fsynced, by generation: nil if
// there is no snapshot, it is damaged, or it is not database id's (as
// loadSnapshot judges it).
func newestProvenSizes(fs vfs.FS, dir string, names []string, id DBID) map[uint64]int64 {
	newest, found := newestSnapshot(names)
	if !found {
		return nil
	}
	s, err := openSnapshot(fs, filepath.Join(dir, snapName(newest)))
	if err != nil {
		return nil
	}
	_ = s.f.Close()
	if s.hdr.id != id {
		return nil
	}
	return s.meta.provenSizes()
}
