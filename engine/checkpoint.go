package engine

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Checkpoint makes a consistent copy of the database in destDir (which must
// not exist or be empty) while writes go on. Sealed segments are
// hard-linked (copied when linking fails, e.g. across filesystems); the
// segment that was active when the copy was cut is copied up to that
// point; and an index snapshot is written with them, so opening the
// checkpoint is fast. Opening it gives exactly the state at the cut: every
// write that returned before Checkpoint was called is in it, none that
// started after it returned is.
//
// The cut is the snapshot's accounting position (see snapshot.go): the
// active segment is fsynced there, and the snapshot's fuzzy index copy is
// completed by replaying the copied log up to it.
func (db *DB) Checkpoint(destDir string) error {
	_, err := db.CheckpointWith(destDir, CheckpointOptions{})
	return err
}

// CheckpointOptions configure CheckpointWith.
type CheckpointOptions struct {
	// Copy copies every segment instead of hard-linking the sealed ones. A
	// hard link shares the file's blocks with the database: on the same
	// filesystem it guards against deleting or overwriting files, not
	// against bit rot or a failing disk. A copy does (at the cost of the
	// space and the time to copy).
	Copy bool
}

// CheckpointResult says how a checkpoint's segments were made.
type CheckpointResult struct {
	Linked int   // sealed segments (and a base bundle in the directory) hard-linked, sharing blocks with the database
	Copied int   // segments (and a base bundle) copied
	Bytes  int64 // bytes copied
}

// CheckpointWith is Checkpoint with options; it reports how many segments
// were hard-linked and how many copied.
func (db *DB) CheckpointWith(destDir string, co CheckpointOptions) (CheckpointResult, error) {
	var res CheckpointResult
	if db.opts.ReadOnly {
		return res, ErrReadOnly
	}
	if err := db.startBg(); err != nil {
		return res, err
	}
	defer db.bg.Done()
	if err := mkdirDurable(db.fs, destDir); err != nil {
		return res, fmt.Errorf("marlin: checkpoint: %w", err)
	}
	names, err := db.fs.List(destDir)
	if err != nil {
		return res, fmt.Errorf("marlin: checkpoint: %w", err)
	}
	if len(names) > 0 {
		return res, fmt.Errorf("marlin: checkpoint: %s is not empty: give a new or empty directory", destDir)
	}
	// foldMu keeps the base the delta goes with; compactMu keeps every
	// segment the snapshot names in place until the copies are made.
	db.foldMu.Lock()
	defer db.foldMu.Unlock()
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	_, err = db.writeSnapshot(destDir, snapName(1), db.stopBg, func(meta *snapMeta) error {
		// The checkpoint is this database: same identity and hash key,
		// written before any segment (the invariant Open relies on).
		if err := writeMeta(db.fs, destDir, db.meta); err != nil {
			return fmt.Errorf("marlin: checkpoint: %w", err)
		}
		if err := db.checkpointBase(destDir, co.Copy, &res); err != nil {
			return fmt.Errorf("marlin: checkpoint: %w", err)
		}
		for _, s := range meta.segs {
			if err := db.copySegment(s, s.gen == meta.acct.gen || co.Copy, destDir, &res); err != nil {
				return fmt.Errorf("marlin: checkpoint: %w", err)
			}
		}
		// A LOCK file lets read-only opens of the checkpoint take their
		// shared lock, so a writer cannot slip in beside them.
		lock, err := db.fs.Create(filepath.Join(destDir, LockFileName))
		if err != nil {
			return fmt.Errorf("marlin: checkpoint: %w", err)
		}
		if err := lock.Close(); err != nil {
			return fmt.Errorf("marlin: checkpoint: %w", err)
		}
		return db.fs.SyncDir(destDir)
	})
	return res, err
}

// copySegment puts segment s, as the snapshot saw it, into dir. A segment
// sealed before the cut never changes again and is hard-linked unless copy
// is set. The one that was active at the cut is always copied (the caller
// sets copy), even if a roll has sealed it since: it becomes the
// checkpoint's newest segment, which a writable open of the checkpoint
// appends to, and appends through a shared inode would land in this
// database too.
func (db *DB) copySegment(s snapSeg, copy bool, dir string, res *CheckpointResult) error {
	src := filepath.Join(db.dir, segment.FileName(s.gen))
	dst := filepath.Join(dir, segment.FileName(s.gen))
	if !copy {
		if err := db.fs.Link(src, dst); err == nil {
			res.Linked++
			return nil
		}
	}
	if err := db.copyFile(src, dst, s.size); err != nil {
		return err
	}
	res.Copied++
	res.Bytes += s.size
	return nil
}

// copyFile copies the first n bytes of src to a new file dst and fsyncs it.
func (db *DB) copyFile(src, dst string, n int64) (err error) {
	in, err := db.fs.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := db.fs.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = db.fs.Remove(dst)
		}
	}()
	if err := copyRange(in, out, 0, n, make([]byte, 1<<20)); err != nil {
		return err
	}
	return out.Sync()
}

// copyRange appends bytes [from, to) of in to out, through buf.
func copyRange(in, out vfs.File, from, to int64, buf []byte) error {
	for off := from; off < to; {
		k := min(int64(len(buf)), to-off)
		if _, err := in.ReadAt(buf[:k], off); err != nil && !(errors.Is(err, io.EOF) && off+k == to) {
			return err
		}
		if _, err := out.Write(buf[:k]); err != nil {
			return err
		}
		off += k
	}
	return nil
}
