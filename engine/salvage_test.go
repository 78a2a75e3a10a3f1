package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// salvageFixture writes n keys over several segments, closes, and flips a
// byte in the record of key k17 (in a sealed segment). It returns the FS.
func salvageFixture(t *testing.T, n int, snapshots bool) *vfs.MemFS {
	fs := vfs.NewMem()
	o := testOpts(fs)
	o.DisableSnapshots = !snapshots
	db, err := Open("/db", o)
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200)))
	}
	loc := db.locOf(t, []byte("k17"))
	id, off := segment.SplitLoc(loc)
	name := db.segs[id].Load().name
	require.NoError(t, db.Close())
	b := readFile(t, fs, name)
	b[off+20] ^= 0xff
	writeFile(t, fs, name, b)
	return fs
}

// locOf returns key's index location.
func (db *DB) locOf(t *testing.T, key []byte) uint64 {
	var loc uint64
	require.True(t, db.ix.Lookup(db.hash(key), func(l uint64) bool {
		r, locked, err := db.recordAt(l)
		if locked {
			db.tailMu.RUnlock()
		}
		if err == nil && string(r.Key) == string(key) {
			loc = l
			return true
		}
		return false
	}))
	return loc
}

// TestSkipCorruptIteration: with one bad record, a plain walk stops at it
// (before the option, that was the only behaviour: dump stopped after part
// of the pairs); SkipCorrupt yields every other pair and reports the one.
func TestSkipCorruptIteration(t *testing.T) {
	fs := salvageFixture(t, 1000, true)
	o := testOpts(fs)
	o.ReadOnly = true
	db, err := Open("/db", o) // the snapshot spares the replay: Open works
	require.NoError(t, err)
	defer db.Close()
	n := 0
	err = db.ForEach(func(k, v []byte) error { n++; return nil })
	require.ErrorIs(t, err, ErrCorrupt)
	require.Less(t, n, 1000)

	it := db.NewIteratorWith(IterOptions{SkipCorrupt: true})
	seen := map[string]bool{}
	for it.Next() {
		seen[string(it.Key())] = true
	}
	require.NoError(t, it.Err())
	require.Len(t, seen, 999)
	require.False(t, seen["k17"])
	sk := it.Skipped()
	require.EqualValues(t, 1, sk.Count)
	require.ErrorIs(t, sk.Records[0].Err, ErrCorrupt)
}

// TestSalvageOpen: a full replay meeting the bad record fails Open with
// ErrCorrupt; a salvaging Open skips it and the rest is readable.
func TestSalvageOpen(t *testing.T) {
	fs := salvageFixture(t, 1000, false)
	o := testOpts(fs)
	o.ReadOnly = true
	o.DisableSnapshots = true
	_, err := Open("/db", o)
	require.ErrorIs(t, err, ErrCorrupt)

	o.Salvage = true
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.Len(t, db.Salvaged(), 1)
	s := db.Salvaged()[0]
	require.Less(t, s.Offset, s.Resume)
	it := db.NewIteratorWith(IterOptions{SkipCorrupt: true})
	n := 0
	for it.Next() {
		n++
	}
	require.NoError(t, it.Err())
	require.Equal(t, 999, n)
	_, err = db.Get([]byte("k17"))
	require.ErrorIs(t, err, ErrNotFound)

	w := testOpts(fs)
	w.Salvage = true
	_, err = Open("/db", w)
	require.ErrorIs(t, err, ErrBadOptions)
}

// TestCheckpointCopy: with Copy no segment shares an inode with the
// database (a bit flip in the database's file does not reach the
// checkpoint); without it sealed segments are linked, and the result says
// so.
func TestCheckpointCopy(t *testing.T) {
	dir := t.TempDir()
	o := &Options{FS: vfs.Default, SegmentSize: 64 << 10, Sync: SyncNone, Logger: discardLogger, CompactionThreshold: -1}
	db, err := Open(dir+"/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 500 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 300)))
	}
	linked, err := db.CheckpointWith(dir+"/linked", CheckpointOptions{})
	require.NoError(t, err)
	require.Positive(t, linked.Linked)
	require.Equal(t, 1, linked.Copied) // the segment active at the cut
	copied, err := db.CheckpointWith(dir+"/copied", CheckpointOptions{Copy: true})
	require.NoError(t, err)
	require.Zero(t, copied.Linked)
	require.Equal(t, linked.Linked+1, copied.Copied)
	for _, name := range []string{"linked", "copied"} {
		rep, err := Verify(dir+"/"+name, nil)
		require.NoError(t, err)
		require.True(t, rep.OK(), "%s: %v", name, rep.Problems)
	}
}
