package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/marlinkv/marlin/engine"
)

func runCompact(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("compact", "[flags] DIR\n\nRuns a full compaction pass now: every segment holding superseded or deleted\n"+
		"records is rewritten without them and removed. DIR is opened for writing,\n"+
		"so no other process may have it open.",
		"marlin compact /var/lib/app/db", stderr)
	segSize := segmentSizeFlag(fs)
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
	if err := db.Compact(); err != nil {
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
	d := s1.Sub(s0)
	fmt.Fprintf(stdout, "compacted %s: %d → %d segments, %s rewritten, %s removed (%s reclaimed)\n",
		dir, len(s0.Segments), len(s1.Segments), ibytes(d.BytesRewritten),
		plural(d.SegmentsRemoved, "segment", "segments"), ibytes(d.BytesReclaimed))
	fmt.Fprintf(stdout, "disk use %s → %s; %s live keys\n", ibytes(before), ibytes(after), comma(s1.Keys))
	return nil
}

func runCheckpoint(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("checkpoint", "DIR DEST\n\nWrites a consistent copy of DIR into DEST (which must not exist or be empty):\n"+
		"sealed segments are hard-linked when DEST is on the same filesystem, the\n"+
		"active one is copied, and an index snapshot is written so that DEST opens\n"+
		"fast. DIR is opened for writing (the engine's checkpoint needs a writable\n"+
		"handle), so no other process may have it open; a running program makes\n"+
		"checkpoints of its own directory with DB.Checkpoint.",
		"marlin checkpoint /var/lib/app/db /backup/db-2026-01-31", stderr)
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
	if err == nil {
		err = db.Checkpoint(dest)
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
