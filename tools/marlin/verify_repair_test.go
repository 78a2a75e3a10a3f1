package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRepairIsHonest reproduces the report: a directory loaded in batches
// of 1,000, the newest (fsynced) segment cut by 100 bytes. Before the fix,
// verify --repair printed a cut at the damaged record's offset, cut 120 KB
// earlier (the start of the batch whose commit was lost), dropped 1,000
// keys without naming them, without asking, and without saving them.
func TestRepairIsHonest(t *testing.T) {
	root := t.TempDir()
	input := writeKeys(t, root, "key-%05d", 3000, 100)
	dir := filepath.Join(root, "db")
	mustRun(t, "load", "--create", "--quiet", "--batch", "1000", dir, input)
	segs := segFiles(t, dir)
	seg := segs[len(segs)-1]
	truncateBy(t, seg, 100)
	before := dirState(t, dir)

	// No terminal, no --yes: refused, nothing changed.
	old := stdinIsTerminal
	defer func() { stdinIsTerminal = old }()
	stdinIsTerminal = func() bool { return false }
	r := marlinStdin(t, "y\n", "verify", "--repair", dir)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "--yes")
	require.Equal(t, before, dirState(t, dir))

	// The plan: the exact offset, 999 readable records of keys (the last
	// put lost its end), the keys themselves (the first 20).
	m := regexp.MustCompile(`cut (\S+) at offset (\d+) \(the file has (\d+) bytes\): drops`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, r.stdout)
	require.Equal(t, seg, m[1])
	off, err := strconv.ParseInt(m[2], 10, 64)
	require.NoError(t, err)
	require.Contains(t, r.stdout, "999 readable records, 999 of keys")
	require.Contains(t, r.stdout, "put, in a batch without its commit key-02000\n")
	require.Contains(t, r.stdout, "... and 979 keys more")

	// A terminal that says no: nothing changed.
	stdinIsTerminal = func() bool { return true }
	r = marlinStdin(t, "n\n", "verify", "--repair", dir)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stdout, "as planned above? [y/N]")
	require.Contains(t, r.stderr, "not confirmed")
	require.Equal(t, before, dirState(t, dir))

	// --verbose lists every key.
	r = marlinStdin(t, "n\n", "verify", "--repair", "--verbose", dir)
	require.Contains(t, r.stdout, "key-02998\n")

	// Yes: the cut is exactly at the planned offset, after the bytes were
	// saved next to the directory.
	orig, err := os.ReadFile(seg)
	require.NoError(t, err)
	r = marlinStdin(t, "y\n", "verify", "--repair", dir)
	require.Equal(t, 0, r.code, "%s\n%s", r.stdout, r.stderr)
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.Equal(t, off, fi.Size(), "cut where the plan said")
	side := regexp.MustCompile(`saved the \S+ \S+ dropped to (\S+)\n`).FindStringSubmatch(r.stdout)
	require.NotNil(t, side, r.stdout)
	require.Equal(t, root, filepath.Dir(side[1]))
	saved, err := os.ReadFile(side[1])
	require.NoError(t, err)
	require.Contains(t, string(saved), string(orig[off:]))

	got := readPairs(t, dir)
	require.Len(t, got, 2000)
	require.Contains(t, got, "key-01999")
}

// TestPutOnCorruptPointsAtRepair: a write command meeting damage it must
// not cut says how to repair. (With the engine refusing fsynced damage at
// Open, this is the message a user of marlin put sees.)
func TestPutOnCorruptPointsAtRepair(t *testing.T) {
	dir := makeFixture(t)
	truncateBy(t, segFiles(t, dir)[1], 20) // a sealed segment: corruption, refused
	r := marlin(t, "put", "--create", dir, "k", "v")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "marlin verify --repair "+dir)
}
