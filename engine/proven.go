package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

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

// LogEnd says where the valid log ends in one segment whose records stop
// decoding before the end of its file, or which is shorter than the newest
// snapshot proves it was. Repair plans its cut from it.
type LogEnd struct {
	File string
	Gen  uint64
	Size int64 // the file's size
	// End is where the valid log ends: the end of the last record (of the
	// last committed batch) before the damage; a cut at End keeps
	// everything before it.
	End int64
	// Reason says why decoding stopped ("" if the file only is shorter
	// than Proven).
	Reason string
	// Proven is the size that the newest index snapshot or a sync mark
	// after End shows had been fsynced (0: nothing proves any). End <
	// Proven means a cut at End drops fsynced, acknowledged data.
	Proven int64
	// TornTail reports that a writable Open truncates this segment at End
	// by itself (a possibly torn tail of the newest segment, which nothing
	// proves was fsynced); otherwise Open fails with ErrCorrupt.
	TornTail bool
}

// LogEnds scans every segment of dir, without modifying anything, and
// returns where the valid log ends in each one that recovery would find
// damaged or short, oldest first. opts may be nil; only its FS and
// SegmentSize matter.
func LogEnds(dir string, opts *Options) ([]LogEnd, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	lim := segment.FormatLimits // as Open decodes
	names, err := o.FS.List(dir)
	if err != nil {
		return nil, err
	}
	onDisk := map[uint64]int64{}
	var gens []uint64
	for _, n := range names {
		if g, ok := segment.ParseFileName(n); ok {
			fi, err := o.FS.Stat(filepath.Join(dir, n))
			if err != nil {
				return nil, err
			}
			onDisk[g] = fi.Size()
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	// Only a snapshot of this database proves anything: without a readable
	// identity file nothing is known to be this database's.
	var proven map[uint64]int64
	if m, err := readMeta(o.FS, dir); err == nil {
		proven = newestProvenSizes(o.FS, dir, names, m.id)
	}
	torn := tornTailSegments(gens, onDisk)
	var ends []LogEnd
	for _, gen := range gens {
		name := filepath.Join(dir, segment.FileName(gen))
		size := onDisk[gen]
		if size < segment.HeaderSize {
			ends = append(ends, LogEnd{File: name, Gen: gen, Size: size, End: 0, Reason: "shorter than a header",
				Proven: proven[gen], TornTail: torn[gen] && proven[gen] == 0})
			continue
		}
		data, closeFn, err := readWhole(o.FS, name)
		if err != nil {
			return nil, err
		}
		end, serr := segment.Scan(data, gen, lim, func([]segment.Entry) error { return nil })
		claim := int64(0)
		if serr != nil {
			claim = segment.SyncedClaim(data, gen, lim, end)
		}
		closeFn()
		p := max(proven[gen], claim)
		if serr == nil && size >= proven[gen] {
			continue
		}
		e := LogEnd{File: name, Gen: gen, Size: size, End: min(end, size), Proven: p}
		if serr != nil {
			e.Reason = serr.Error()
			var ce *segment.CorruptError
			if errors.As(serr, &ce) {
				e.Reason = ce.Reason
			}
		} else {
			e.Reason = fmt.Sprintf("segment is %d bytes but the index snapshot shows %d bytes had been fsynced", size, proven[gen])
		}
		e.TornTail = torn[gen] && serr != nil && errors.Is(serr, ErrCorrupt) && e.End >= p && size >= proven[gen]
		ends = append(ends, e)
	}
	return ends, nil
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
