package engine

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Repair that says what it drops.
//
// Recovery never cuts data that had been fsynced (it refuses such damage as
// ErrCorrupt); the explicit repair below is the only way to cut it, in two
// steps so that a person (or a program) can look before anything changes:
//
//   - PlanRepair scans every segment as LogEnds does (the same decisions as
//     Open) and, per damaged segment, names the exact offset where it
//     would be cut (where the valid, committed log ends: the start of the
//     first bad record, or of a batch whose commit record is lost), and,
//     with segment.Check, every record from there to the end of the file:
//     offset, kind, sequence number and key. Nothing is modified.
//   - ApplyRepair takes the directory's lock, checks that the files still
//     are exactly as planned (size and a CRC of the bytes to be dropped),
//     saves the dropped bytes to a side file outside the directory (fsynced
//     before anything is cut), deletes the index snapshots, truncates each
//     segment exactly at the planned offset, and opens the directory once
//     to rebuild the index from the log.

// RepairPlan is what ApplyRepair will do to a directory, made by
// PlanRepair.
type RepairPlan struct {
	Dir string // the data directory planned for
	// Cuts lists the damaged segments, oldest first.
	Cuts []SegmentCut
	// Unrepairable lists damage a cut cannot fix (a segment's header); a
	// plan with any is refused by ApplyRepair.
	Unrepairable []VerifyProblem
	// SaveTo is the side file the dropped bytes are saved to. PlanRepair
	// sets a default next to the directory (DIR.repair-TIMESTAMP.dropped,
	// in DIR's parent); callers may change it. It must not be inside Dir.
	SaveTo string
}

// SegmentCut is the repair of one damaged segment: the file is cut to
// Offset bytes, dropping every record at or after it.
type SegmentCut struct {
	File       string // path of the segment file
	Generation uint64 // the segment's generation
	Size       int64  // the file's size when planned
	Offset     int64  // the file is truncated to this size
	Damage     int64  // offset of the first bad record (>= Offset)
	Reason     string // why the scan stopped there
	// Proven is the size that the newest index snapshot or a sync mark
	// shows had been fsynced (0: nothing proves any); Offset < Proven means
	// the cut drops acknowledged data. TornTail reports that a writable
	// Open would cut the segment there by itself (see LogEnd).
	Proven   int64 // see above
	TornTail bool  // see above
	// CRC is a CRC-32C of bytes [Offset, Size) when planned: ApplyRepair
	// refuses to cut if they changed.
	CRC uint32
	// Dropped lists the records at or after Offset that still decode, in
	// file order (damaged stretches between them are not records).
	Dropped []DroppedRecord
}

// DroppedBytes is how many bytes the cut removes.
func (c *SegmentCut) DroppedBytes() int64 { return max(c.Size-c.Offset, 0) }

// DroppedRecord is one decodable record a cut drops.
type DroppedRecord struct {
	Offset int64        // the record's offset in its segment
	Kind   segment.Kind // put, delete, batch commit or sync mark
	Batch  bool         // part of a batch (dropped whole when its commit is lost)
	Seq    uint64       // its sequence number
	Key    []byte       // a copy (nil for batch commits and sync marks)
}

// DroppedRecords counts the records the plan drops, and how many of them
// are puts or deletes of keys (the others are batch commits and sync
// marks, which hold no data).
func (p *RepairPlan) DroppedRecords() (records, keyed int) {
	for i := range p.Cuts {
		for _, r := range p.Cuts[i].Dropped {
			records++
			if r.Kind == segment.KindPut || r.Kind == segment.KindDelete {
				keyed++
			}
		}
	}
	return records, keyed
}

// DroppedBytes is how many bytes the plan removes from the log.
func (p *RepairPlan) DroppedBytes() int64 {
	var n int64
	for i := range p.Cuts {
		n += p.Cuts[i].DroppedBytes()
	}
	return n
}

// PlanRepair scans the segments of dir and returns what ApplyRepair would
// cut: where the valid log ends in each damaged segment, as LogEnds finds
// it. It reads without a lock and modifies nothing. opts may be nil; only
// its FS matters.
func PlanRepair(dir string, opts *Options) (*RepairPlan, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	plan := &RepairPlan{Dir: dir, SaveTo: defaultSidePath(dir, time.Now())}
	err = scanLogEnds(o.FS, dir, func(e *segEnd, data []byte) error {
		plan.add(e, data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("marlin: plan repair: %w", err)
	}
	return plan, nil
}

// defaultSidePath is DIR.repair-TIMESTAMP.dropped in DIR's parent.
func defaultSidePath(dir string, now time.Time) string {
	clean := filepath.Clean(dir)
	return filepath.Join(filepath.Dir(clean), filepath.Base(clean)+".repair-"+now.UTC().Format("20060102T150405Z")+".dropped")
}

// add adds the cut (or the unrepairable problem) for one damaged segment,
// data being the whole file.
func (p *RepairPlan) add(e *segEnd, data []byte) {
	switch {
	case e.badHeader:
		p.Unrepairable = append(p.Unrepairable, VerifyProblem{File: e.File, Offset: 0, What: e.Reason})
		return
	case e.created && e.TornTail:
		return // Open removes it (nothing proves it held data)
	case e.End == e.Size:
		return // nothing to cut: only shorter than the snapshot shows, which the rebuild ignores
	}
	cut := SegmentCut{File: e.File, Generation: e.Gen, Size: e.Size, Offset: e.End, Damage: e.damage, Reason: e.Reason,
		Proven: e.Proven, TornTail: e.TornTail}
	if e.End < e.Size {
		cut.CRC = crc32.Checksum(data[e.End:], crcTable)
		probs := segment.Check(data, e.Gen, segment.FormatLimits, func(off int64, r *segment.Record, _ int) {
			if off < e.End {
				return
			}
			d := DroppedRecord{Offset: off, Kind: r.Kind, Batch: r.Flags&segment.FlagBatch != 0, Seq: r.Seq}
			if r.Kind == segment.KindPut || r.Kind == segment.KindDelete {
				d.Key = slices.Clone(r.Key)
			}
			cut.Dropped = append(cut.Dropped, d)
		})
		for _, pr := range probs {
			if pr.Offset >= e.End {
				cut.Damage = min(cut.Damage, pr.Offset)
				break
			}
		}
	}
	p.Cuts = append(p.Cuts, cut)
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ApplyRepair carries out plan: under the directory's lock it checks that
// every segment to cut is still as planned, saves the bytes to be dropped to
// plan.SaveTo (a new file, fsynced, with its directory, before anything is
// cut), deletes the index snapshots, truncates each segment at exactly
// its planned offset (fsynced), then opens the directory once to rebuild
// the index from the log and closes it. opts may be nil.
//
// Side file format (for a person with dd, or a future salvage tool): a text
// line "MARLIN-REPAIR-DROPPED 1", then per cut a line
// "segment NAME generation G offset OFF length N crc32c HEX" followed by the
// N dropped bytes and a newline.
func ApplyRepair(plan *RepairPlan, opts *Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	if o.ReadOnly {
		return ErrReadOnly
	}
	if len(plan.Unrepairable) > 0 {
		return fmt.Errorf("%w: the plan has damage a cut cannot repair: %s", ErrCorrupt, plan.Unrepairable[0])
	}
	dir := plan.Dir
	if plan.DroppedBytes() > 0 {
		if err := checkSidePath(dir, plan.SaveTo); err != nil {
			return err
		}
	}
	lock, err := o.FS.Lock(filepath.Join(dir, LockFileName))
	if err != nil {
		return fmt.Errorf("marlin: repair %s: %w", dir, err)
	}
	err = applyLocked(o.FS, plan)
	if cerr := lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("marlin: repair: %w", cerr)
	}
	if err != nil {
		return err
	}
	// Rebuild the index by a full replay, and write a fresh snapshot.
	o.dropSnapshots = true
	db, err := Open(dir, &o)
	if err != nil {
		return fmt.Errorf("marlin: repair: reopening after the cut: %w", err)
	}
	return db.Close()
}

// checkSidePath refuses a side file inside dir (recovery must never read
// it, and it must survive the directory) or one that already exists.
func checkSidePath(dir, side string) error {
	if side == "" {
		return fmt.Errorf("%w: repair: no side file to save the dropped bytes to", ErrBadOptions)
	}
	absDir, err1 := filepath.Abs(dir)
	absSide, err2 := filepath.Abs(side)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("marlin: repair: %w", err)
	}
	if rel, err := filepath.Rel(absDir, absSide); err == nil && !strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%w: repair: the side file %s must not be inside the database directory %s", ErrBadOptions, side, dir)
	}
	return nil
}

func applyLocked(fs vfs.FS, plan *RepairPlan) error {
	fresh, err := PlanRepair(plan.Dir, &Options{FS: fs})
	if err != nil {
		return err
	}
	if !sameCuts(plan.Cuts, fresh.Cuts) || len(fresh.Unrepairable) > 0 {
		return fmt.Errorf("marlin: repair: %s changed since the plan was made (plan again)", plan.Dir)
	}
	if plan.DroppedBytes() > 0 {
		if err := saveDropped(fs, plan); err != nil {
			return fmt.Errorf("marlin: repair: saving the dropped bytes to %s: %w (nothing was cut)", plan.SaveTo, err)
		}
	}
	// The snapshots may name positions past a cut; they go first, so that
	// a crash midway leaves a directory that replays from the log.
	names, err := fs.List(plan.Dir)
	if err == nil {
		err = removeSnapshots(fs, plan.Dir, names, true)
	}
	if err != nil {
		return fmt.Errorf("marlin: repair: %w", err)
	}
	for _, c := range plan.Cuts {
		if err := cutFile(fs, c.File, c.Offset); err != nil {
			return fmt.Errorf("marlin: repair: cutting %s at offset %d: %w", c.File, c.Offset, err)
		}
	}
	return nil
}

func sameCuts(a, b []SegmentCut) bool {
	return slices.EqualFunc(a, b, func(x, y SegmentCut) bool {
		return x.File == y.File && x.Size == y.Size && x.Offset == y.Offset && x.CRC == y.CRC
	})
}

// saveDropped writes the bytes each cut drops to plan.SaveTo, a new file,
// and fsyncs it and its directory.
func saveDropped(fs vfs.FS, plan *RepairPlan) (err error) {
	if _, err := fs.Stat(plan.SaveTo); err == nil {
		return fmt.Errorf("%s already exists", plan.SaveTo)
	} else if !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	out, err := fs.Create(plan.SaveTo)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.WriteString(out, "MARLIN-REPAIR-DROPPED 1\n"); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, c := range plan.Cuts {
		if c.DroppedBytes() == 0 {
			continue
		}
		hdr := fmt.Sprintf("segment %s generation %d offset %d length %d crc32c %08x\n",
			filepath.Base(c.File), c.Generation, c.Offset, c.DroppedBytes(), c.CRC)
		if _, err := io.WriteString(out, hdr); err != nil {
			return err
		}
		if err := copyDropped(fs, c, out, buf); err != nil {
			return err
		}
		if _, err := io.WriteString(out, "\n"); err != nil {
			return err
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return fs.SyncDir(filepath.Dir(plan.SaveTo))
}

// copyDropped appends the bytes cut c drops to out.
func copyDropped(fs vfs.FS, c SegmentCut, out vfs.File, buf []byte) error {
	in, err := fs.Open(c.File)
	if err != nil {
		return err
	}
	defer in.Close()
	return copyRange(in, out, c.Offset, c.Size, buf)
}

// cutFile truncates name to size and fsyncs it.
func cutFile(fs vfs.FS, name string, size int64) error {
	f, err := fs.OpenReadWrite(name)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
