package engine

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// tsTombs returns, for every tombstone of key in the segment files of dir,
// the shadowGen its value holds, by file generation.
func tsTombs(t *testing.T, fs vfs.FS, dir, key string) map[uint64][]uint64 {
	t.Helper()
	m := map[uint64][]uint64{}
	for _, f := range rcSegFiles(t, fs, dir) {
		for _, r := range rcLayout(t, rcRead(t, fs, f), rcGen(t, f)) {
			if r.kind == segment.KindDelete && r.key == key {
				v, n := binary.Uvarint(r.value)
				require.Equal(t, len(r.value), n, "tombstone value is one uvarint")
				m[rcGen(t, f)] = append(m[rcGen(t, f)], v)
			}
		}
	}
	return m
}

// tsRollUntil writes filler records until the active segment changes.
func tsRollUntil(t *testing.T, db *DB, prefix string) {
	t.Helper()
	putUntilRoll(t, db, func(i int) error {
		return db.Put([]byte(prefix), fmt.Appendf(nil, "%d-%040d", i, i))
	})
}

func tsTombBytes(t *testing.T, db *DB) (n int64) {
	t.Helper()
	st, err := db.Stats()
	require.NoError(t, err)
	for _, s := range st.Segments {
		n += s.TombBytes
	}
	return n
}

// TestTombstoneShadowLifecycle: item 3. A tombstone records the generation
// it shadows; while that segment exists it counts as needed ("tomb")
// bytes, not dead, so its copy does not make its new segment qualify for
// compaction again (before the fix a copied tombstone was dead at once and
// every pass rewrote it); once nothing older exists it is dropped, and the
// key stays deleted after a full replay.
func TestTombstoneShadowLifecycle(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("k"), []byte("old")))
	for i := range 20 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "live-%d", i), []byte("x")))
	}
	db.mu.Lock()
	g1 := db.active.gen
	db.mu.Unlock()
	tsRollUntil(t, db, "live-fill") // the old record of k is in g1, sealed

	require.NoError(t, db.Delete([]byte("k")))
	require.Positive(t, tsTombBytes(t, db), "a needed tombstone is not dead")
	tsRollUntil(t, db, "hot") // overwrites: the tombstone's segment is mostly dead
	tsRollUntil(t, db, "hot")
	require.NoError(t, db.Sync())
	tombs := tsTombs(t, fs, "/db", "k")
	require.Len(t, tombs, 1)
	for _, v := range tombs {
		require.Equal(t, []uint64{g1}, v, "the tombstone shadows g1")
	}

	// Compact the overwritten segments, not g1: the tombstone is copied,
	// keeping what it shadows, and counts as needed in its new segment.
	require.NoError(t, db.compactPass(0.5, 0, false))
	require.NoError(t, db.Sync())
	copies := 0
	for _, v := range tsTombs(t, fs, "/db", "k") {
		for _, s := range v {
			require.Equal(t, g1, s)
			copies++
		}
	}
	require.GreaterOrEqual(t, copies, 1)
	require.Positive(t, tsTombBytes(t, db))
	st, err := db.Stats()
	require.NoError(t, err)
	for range 3 { // nothing qualifies any more: the copy is not rewritten
		require.NoError(t, db.compactPass(0.5, 0, false))
	}
	st2, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, st.BytesRewritten, st2.BytesRewritten, "a needed tombstone's segment does not qualify")

	// Once g1 is gone, the tombstone is dropped.
	for i := range 20 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "live-%d", i), []byte("y")))
	}
	require.NoError(t, db.Compact())
	require.NoError(t, db.Compact())
	require.Zero(t, tsTombBytes(t, db))
	require.NoError(t, db.Close())
	require.Empty(t, tsTombs(t, fs, "/db", "k"), "no tombstone is left once nothing older exists")
	o := lcOpts(fs)
	o.DisableSnapshots = true
	db, err = Open("/db", o)
	require.NoError(t, err)
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound, "the key stays deleted after a full replay")
	require.Zero(t, tsTombBytes(t, db))
	require.NoError(t, db.Close())
}

// TestTombstoneFiguresSurviveReopen: the needed-tombstone figures are kept
// in the snapshot's segment table and recomputed by a full replay.
func TestTombstoneFiguresSurviveReopen(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	for i := range 40 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("v")))
	}
	tsRollUntil(t, db, "fill")
	for i := range 20 {
		require.NoError(t, db.Delete(fmt.Appendf(nil, "k%d", i)))
	}
	var b Batch
	b.Delete([]byte("absent")) // shadows nothing: dead at once
	require.NoError(t, db.Write(&b))
	want := tsTombBytes(t, db)
	require.Positive(t, want)
	require.NoError(t, db.Close())
	for _, disable := range []bool{false, true} {
		o := lcOpts(fs)
		o.DisableSnapshots = disable
		db, err = Open("/db", o)
		require.NoError(t, err)
		require.Equal(t, !disable, db.st.snapshotLoaded.Load())
		require.Equal(t, want, tsTombBytes(t, db), "snapshots disabled: %v", disable)
		require.NoError(t, db.Close())
	}
}

// TestBatchTombstoneFiguresMatchReplay: the needed-tombstone bytes counted
// while a batch is applied equal what a full replay derives from the
// tombstones' values. Before the fix, a batch deleting a key twice counted
// the second tombstone as dead (the key was already gone when it was
// applied) while its value, which replay reads, says it shadows the
// segment: the figure changed at the next Open.
func TestBatchTombstoneFiguresMatchReplay(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("k"), []byte("v")))
	var b Batch
	b.Delete([]byte("k"))
	b.Delete([]byte("k"))
	require.NoError(t, db.Write(&b))
	live := tsTombBytes(t, db)
	require.Positive(t, live)
	require.NoError(t, db.Close())
	o := lcOpts(fs)
	o.DisableSnapshots = true
	db, err = Open("/db", o)
	require.NoError(t, err)
	require.Equal(t, live, tsTombBytes(t, db), "a full replay counts the same needed tombstones")
	require.NoError(t, db.Close())
}
