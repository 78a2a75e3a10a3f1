package main

import (
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/index"
)

func flipBit(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[off] ^= 0x04
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, fi.Size()-n))
}

// injectStaleEntry rewrites the newest index snapshot so that the first
// entry of its first shard run points at the record of another key (the
// first entry of the second run): the snapshot then holds an entry the log
// does not support, and misses one of its live keys.
func injectStaleEntry(t *testing.T, dir string) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.idx"))
	require.NoError(t, err)
	require.NotEmpty(t, matches)
	path := matches[len(matches)-1]
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	le := binary.LittleEndian
	trailer := int(le.Uint64(b[len(b)-16:]))
	off := 8 + int(le.Uint32(b)) // skip the header frame
	require.Less(t, off, trailer, "no entry frame")
	n := int(le.Uint32(b[off:]))
	p := b[off+8 : off+8+n]
	count0 := int(le.Uint32(p[4:]))
	require.GreaterOrEqual(t, count0, 1)
	second := p[8+8*count0:]
	require.GreaterOrEqual(t, len(second), 16, "want a second shard run in the first frame")
	s0 := le.Uint64(p[8:])
	s1 := le.Uint64(second[8:])
	le.PutUint64(p[8:], s0&^index.LocMask|s1&index.LocMask)
	le.PutUint32(b[off+4:], crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)))
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// TestVerifyDamage: verify names the file, offset and problem for an
// injected bit flip, a truncated segment and a stale index entry, exits 1,
// and --repair fixes what it can and refuses the rest without changing
// anything. The transcripts are golden files.
func TestVerifyDamage(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		repairs bool
		want    []string
	}{
		{"bit-flip", func(t *testing.T, dir string) {
			flipBit(t, segFiles(t, dir)[0], 200)
		}, false, []string{"0000000000000001.seg at offset 184: checksum mismatch"}},
		{"truncated-sealed", func(t *testing.T, dir string) {
			truncateBy(t, segFiles(t, dir)[1], 20)
		}, false, []string{"0000000000000002.seg at offset", "overruns"}},
		{"truncated-tail", func(t *testing.T, dir string) {
			segs := segFiles(t, dir)
			truncateBy(t, segs[len(segs)-1], 13) // into the close-time sync mark
			// The index snapshot written at Close proves the whole segment
			// was fsynced (its loss would be corruption, not a torn tail):
			// without it, as after a crash before any snapshot, nothing
			// proves the cut bytes durable.
			snaps, err := filepath.Glob(filepath.Join(dir, "*.idx"))
			require.NoError(t, err)
			for _, s := range snaps {
				require.NoError(t, os.Remove(s))
			}
		}, true, []string{"0000000000000004.seg at offset", "torn tail"}},
		{"stale-index-entry", injectStaleEntry, true,
			[]string{"(stale entry)", "a live key is missing from the snapshot's index"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := makeFixture(t)
			root := filepath.Dir(dir)
			want := readPairs(t, dir)
			c.damage(t, dir)
			r := marlin(t, "verify", dir)
			require.Equal(t, 1, r.code, "%s", r.stdout)
			for _, w := range c.want {
				require.Contains(t, r.stdout, w)
			}
			require.Contains(t, r.stderr, "found in "+dir)

			before := dirState(t, dir)
			repairArgs := []string{"verify", "--repair", dir}
			if c.repairs {
				repairArgs = []string{"verify", "--repair", "--yes", "--save", filepath.Join(root, "dropped"), dir}
			}
			transcriptText := transcript(t, root, "verify", dir) + transcript(t, root, repairArgs...)
			after := marlin(t, "verify", dir)
			if c.repairs {
				require.Equal(t, 0, after.code, "after repair:\n%s%s", after.stdout, after.stderr)
				require.Equal(t, want, readPairs(t, dir))
			} else {
				// The raw listing shows the damage and resumes after it. Open
				// refuses a damaged log and inspect points at verify (a bit
				// flip in a superseded record does not stop an Open that
				// loads the snapshot: the record is never read).
				seg := segFiles(t, dir)[0]
				if c.name == "truncated-sealed" {
					seg = segFiles(t, dir)[1]
				}
				transcriptText += transcript(t, root, "dump", "--records", seg) + transcript(t, root, "inspect", dir)
				require.Contains(t, transcriptText, " BAD ")
				if c.name == "truncated-sealed" {
					require.Contains(t, transcriptText, "run 'marlin verify DIR/db' for every problem")
				}
				require.Equal(t, 1, after.code)
				require.Equal(t, before, dirState(t, dir), "a refused repair changed the directory")
				require.Contains(t, transcriptText, "rerun with --yes")
			}
			golden(t, "verify-"+c.name, transcriptText)
		})
	}
}

// dirState is a directory's file names, sizes and contents.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		fi, err := e.Info()
		require.NoError(t, err)
		m[e.Name()] = fi.ModTime().String() + "|" + string(b)
	}
	return m
}

// TestReadOnlyCommands: the commands that only read change nothing, and
// all of them refuse a directory a writer holds with a clear message.
func TestReadOnlyCommands(t *testing.T) {
	dir := makeFixture(t)
	before := dirState(t, dir)
	seg := segFiles(t, dir)[0]
	reads := [][]string{
		{"inspect", dir}, {"inspect", "--json", dir}, {"dump", dir}, {"dump", "--format", "jsonl", dir},
		{"get", dir, "alpha"}, {"verify", dir},
	}
	for _, args := range reads {
		mustRun(t, args...)
	}
	mustRun(t, "dump", "--records", seg)
	require.Equal(t, before, dirState(t, dir), "a read-only command modified the directory")

	db, err := engine.Open(dir, fixtureOpts())
	require.NoError(t, err)
	for _, args := range reads {
		r := marlin(t, args...)
		require.Equal(t, 1, r.code, "%v", args)
		require.Contains(t, r.stderr, dir+" is open for writing by another process", "%v", args)
		require.Empty(t, r.stdout, "%v", args)
	}
	require.NoError(t, db.Close())

	// A writer command while a reader holds the directory.
	ro, err := engine.Open(dir, &engine.Options{ReadOnly: true})
	require.NoError(t, err)
	for _, args := range [][]string{{"put", "--create", dir, "k", "v"}, {"delete", dir, "alpha"}, {"compact", dir}, {"load", "--create", dir, "-"}} {
		r := marlinStdin(t, "k\tv\n", args...)
		require.Equal(t, 1, r.code, "%v", args)
		require.Contains(t, r.stderr, dir+" is in use by another process", "%v", args)
	}
	require.NoError(t, ro.Close())
}

func TestCommandErrors(t *testing.T) {
	dir := makeFixture(t)
	missing := filepath.Join(t.TempDir(), "nope")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", missing}, missing + " does not exist"},
		{[]string{"dump", t.TempDir()}, "is not a Marlin data directory"},
		{[]string{"dump", "--format", "xml", dir}, "--format: want tsv, jsonl or hex"},
		{[]string{"dump", "--records", dir}, "--records takes a segment file"},
		{[]string{"dump", "--prefix", `\q`, dir}, "--prefix: unknown escape"},
		{[]string{"get", dir}, "want DIR KEY"},
		{[]string{"get", "--hex", dir, "zz"}, "KEY: bad hex"},
		{[]string{"put", "--create", "--max-key-size", "3", dir, "long", "v"}, "longer than --max-key-size 3"},
		{[]string{"put", "--create", "--ttl", "-1s", dir, "k", "v"}, "must be positive"},
		{[]string{"checkpoint", dir, filepath.Join(dir, "inside")}, "must not be DIR or inside it"},
		{[]string{"load", "--create", "--format", "csv", dir}, "--format: want auto"},
		{[]string{"inspect", "--bogus", dir}, "flag provided but not defined: -bogus"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
	} {
		r := marlin(t, c.args...)
		require.NotEqual(t, 0, r.code, "%v", c.args)
		require.Contains(t, r.stderr, c.want, "%v", c.args)
		require.False(t, strings.Contains(r.stderr, "marlin: marlin"), "%s", r.stderr)
	}
}

func TestInspectJSON(t *testing.T) {
	dir := makeFixture(t)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "inspect", "--json", dir).stdout), &rep))
	require.EqualValues(t, len(fixturePairs()), rep.Keys)
	require.Len(t, rep.Segments, len(segFiles(t, dir)))
	require.NotNil(t, rep.Snapshot)
	require.True(t, rep.Snapshot.UsedByOpen)
	require.InDelta(t, 1.0, rep.Snapshot.CoveredShare, 1e-9)
	// The creation time is sane (see snapshotCreated).
	require.GreaterOrEqual(t, rep.Snapshot.AgeSeconds, 0.0)
	require.Less(t, rep.Snapshot.AgeSeconds, 600.0)
	require.Equal(t, rep.Disk.Total, rep.Disk.Segments+rep.Disk.Snapshots+rep.Disk.Other)
	require.Greater(t, rep.RAMToOpen, rep.Index.ResidentBytes+rep.WriteBuffer)
	var live int64
	for _, s := range rep.Segments {
		live += s.LiveBytes
	}
	require.Equal(t, rep.LiveBytes, live)
}
