package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/marlinkv/marlin/engine"
)

func runCompact(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("compact", "[flags] DIR\n\nRuns a full compaction pass now: every segment holding superseded or deleted\n"+
		"records is rewritten without them and removed. DIR is opened for writing,\n"+
		"so no other process may have it open.",
		"marlin compact /var/lib/app/db", stderr)
	segSize := segmentSizeFlag(fs)
	quiet := fs.Bool("quiet", false, "no progress line (there is none when stderr is not a terminal)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	dir := pos[0]
	before, err := dirBytes(dir)
	if err != nil {
		return err
	}
	db, err := openWritable(dir, false, engine.Options{MaxKeySize: 65535, CompactionThreshold: -1, SegmentSize: *segSize}, stderr)
	if err != nil {
		return err
	}
	s0, err := db.Stats()
	if err != nil {
		db.Close()
		return err
	}
	// Progress: the bytes copied forward against the live bytes, about
	// what a full pass copies.
	stop := progressLine(stderr, *quiet, func(el time.Duration) string {
		st, err := db.Stats()
		if err != nil {
			return "compact: ..."
		}
		done := st.BytesRewritten - s0.BytesRewritten
		return fmt.Sprintf("compact: %s of about %s rewritten, %s, ETA %s", ibytes(done), ibytes(s0.LiveBytes),
			el.Round(time.Second), eta(done, s0.LiveBytes, el))
	})
	err = db.Compact()
	stop()
	if err != nil {
		db.Close()
		return err
	}
	s1, err := db.Stats()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	after, err := dirBytes(dir)
	if err != nil {
		return err
	}
	// "Reclaimed" is what the directory lost on disk: the removed
	// segments less the copies and the new snapshot (it once reported
	// the removed segments' size while disk use barely moved).
	d := s1.Sub(s0)
	fmt.Fprintf(stdout, "compacted %s: %d → %d segments, %s rewritten, %s removed\n",
		dir, len(s0.Segments), len(s1.Segments), ibytes(d.BytesRewritten),
		plural(d.SegmentsRemoved, "segment", "segments"))
	fmt.Fprintf(stdout, "disk use %s → %s (%s reclaimed); %s keys (expired keys not yet reclaimed included, as inspect counts them)\n",
		ibytes(before), ibytes(after), ibytes(max(before-after, 0)), comma(s1.Keys))
	return nil
}

func runCheckpoint(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("checkpoint", "[flags] DIR DEST\n\nWrites a consistent copy of DIR into DEST (which must not exist or be empty):\n"+
		"sealed segments are hard-linked when DEST is on the same filesystem, the\n"+
		"active one is copied, and an index snapshot is written so that DEST opens\n"+
		"fast. A hard link shares the data blocks with DIR: it protects against\n"+
		"deleting or overwriting DIR's files, NOT against bit rot or a failing\n"+
		"disk (damage to DIR's blocks is damage to DEST's). For a backup, use\n"+
		"--copy, or put DEST on another filesystem. DIR is opened for writing (the\n"+
		"engine's checkpoint needs a writable handle), so no other process may have\n"+
		"it open; a running program makes checkpoints of its own directory with\n"+
		"DB.Checkpoint or DB.CheckpointWith.",
		"marlin checkpoint --copy /var/lib/app/db /backup/db-2026-01-31", stderr)
	copyAll := fs.Bool("copy", false, "copy every segment instead of hard-linking the sealed ones (a real backup on the same filesystem)")
	quiet := fs.Bool("quiet", false, "no progress line (there is none when stderr is not a terminal)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, 2, "DIR DEST"); err != nil {
		return err
	}
	dir, dest := pos[0], pos[1]
	if a, b := filepath.Clean(dir), filepath.Clean(dest); a == b || strings.HasPrefix(b, a+string(filepath.Separator)) {
		return fmt.Errorf("DEST %s must not be DIR or inside it", dest)
	}
	db, err := openWritable(dir, false, engine.Options{MaxKeySize: 65535, CompactionThreshold: -1}, stderr)
	if err != nil {
		return err
	}
	st, err := db.Stats()
	var res engine.CheckpointResult
	if err == nil {
		// Progress: DEST's files against DIR's (hard links count whole at
		// once; copies grow).
		total, _ := dirBytes(dir)
		stop := progressLine(stderr, *quiet, func(el time.Duration) string {
			done, _ := dirBytes(dest)
			return fmt.Sprintf("checkpoint: %s of about %s in %s, %s, ETA %s", ibytes(done), ibytes(total), dest,
				el.Round(time.Second), eta(done, total, el))
		})
		res, err = db.CheckpointWith(dest, engine.CheckpointOptions{Copy: *copyAll})
		stop()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	n, err := dirBytes(dest)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checkpoint of %s written to %s: %s keys, %s\n", dir, dest, comma(st.Keys), ibytes(n))
	fmt.Fprintf(stdout, "segments: %s copied (%s)", plural(int64(res.Copied), "segment", "segments"), ibytes(res.Bytes))
	if res.Linked > 0 {
		fmt.Fprintf(stdout, ", %s HARD-LINKED: they share their disk blocks with %s, so this\n"+
			"checkpoint does not protect against bit rot or a failing disk; use --copy (or another\n"+
			"filesystem) for a backup\n", plural(int64(res.Linked), "segment", "segments"), dir)
	} else {
		fmt.Fprintln(stdout, "; nothing hard-linked: no block is shared with the database")
	}
	return nil
}

// dirBytes is the size of the regular files in dir.
func dirBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}
