package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// salvageDir loads 2,000 pairs into 64 KiB segments and flips a bit inside
// one record of the first (sealed) segment.
func salvageDir(t *testing.T) string {
	root := t.TempDir()
	input := writeKeys(t, root, "key-%05d", 2000, 100)
	dir := filepath.Join(root, "db")
	mustRun(t, "load", "--create", "--quiet", "--segment-size", "65536", dir, input)
	segs := segFiles(t, dir)
	require.Greater(t, len(segs), 2)
	flipBit(t, segs[0], 20000)
	return dir
}

// TestDumpSkipCorrupt: with one bad record a plain dump stops partway
// (exit 1, part of the pairs); --skip-corrupt prints every readable pair,
// names the skipped record on stderr, and exits 1.
func TestDumpSkipCorrupt(t *testing.T) {
	dir := salvageDir(t)
	r := marlin(t, "dump", dir)
	require.Equal(t, 1, r.code)
	require.Less(t, strings.Count(r.stdout, "\n"), 1999)

	r = marlin(t, "dump", "--skip-corrupt", dir)
	require.Equal(t, 1, r.code, r.stderr)
	require.Equal(t, 1999, strings.Count(r.stdout, "\n"))
	require.Contains(t, r.stderr, "1,999 pairs printed; skipped 1 unreadable indexed record and 0 damaged ranges")
	require.Contains(t, r.stderr, segFiles(t, dir)[0]+" at offset ")
	require.Contains(t, r.stderr, "checksum mismatch")

	// Sorted output salvages the same pairs.
	r2 := marlin(t, "dump", "--skip-corrupt", "--sort", dir)
	require.Equal(t, 1999, strings.Count(r2.stdout, "\n"))
}

// TestDumpSkipCorruptWhenOpenFails: without the index snapshot, Open
// replays the whole log and refuses the damage; --skip-corrupt opens in
// salvage mode and still prints every readable pair.
func TestDumpSkipCorruptWhenOpenFails(t *testing.T) {
	dir := salvageDir(t)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".idx") {
			require.NoError(t, os.Remove(filepath.Join(dir, e.Name())))
		}
	}
	r := marlin(t, "dump", dir)
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "corrupt")

	r = marlin(t, "dump", "--skip-corrupt", dir)
	require.Equal(t, 1, r.code, r.stderr)
	require.Equal(t, 1999, strings.Count(r.stdout, "\n"))
	require.Contains(t, r.stderr, "skipped 0 unreadable indexed records and 1 damaged range of the log (at open)")
	require.Contains(t, r.stderr, segFiles(t, dir)[0]+" offsets ")
}

// TestDumpSkipCorruptClean: nothing skipped, exit 0.
func TestDumpSkipCorruptClean(t *testing.T) {
	dir := makeFixture(t)
	r := marlin(t, "dump", "--skip-corrupt", dir)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "nothing was unreadable")
}
