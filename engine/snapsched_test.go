package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestSnapshotScheduling: item 3. Before the fix every compaction pass
// that removed a segment rewrote the whole index snapshot (about 8 GB at
// 10^9 keys). Now a background pass writes none (its retired files wait),
// and the worker writes one only when enough changed: writes reaching
// SnapshotChangeRatio of the keys (and SnapshotRecords), the interval with
// a change, or enough retired segments.
func TestSnapshotScheduling(t *testing.T) {
	fs := vfs.NewMem()
	o := lcOpts(fs)
	o.SnapshotRecords = 1
	o.SnapshotChangeRatio = 0.25
	o.SnapshotLogRatio = -1 // the change rule alone (TestSnapshotWriteAmplification has the gate)
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	due := func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.snapshotDueLocked()
	}
	require.False(t, due(), "nothing changed")
	for i := range 400 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("first-version-of-the-value")))
	}
	require.True(t, due())
	require.NoError(t, db.Snapshot())
	require.False(t, due())
	for i := range 90 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("second")))
	}
	require.False(t, due(), "90 writes are below 25%% of 400 keys")
	for i := 90; i < 110; i++ {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("second")))
	}
	require.True(t, due(), "110 writes reach 25%% of 400 keys")
	require.NoError(t, db.Snapshot())

	// A background pass retires segments but writes no snapshot; their
	// files stay until the next one.
	for i := range 400 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("third")))
	}
	before, err := db.Stats()
	require.NoError(t, err)
	files := rcSegFiles(t, fs, "/db")
	require.NoError(t, db.compactPass(0.5, 0, false))
	after, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Snapshots, after.Snapshots, "no snapshot after a background pass")
	require.Positive(t, after.AwaitingDeletion)
	for _, f := range files {
		_, err := fs.Stat(f)
		require.NoError(t, err, "the retired files wait for a snapshot")
	}
	require.NoError(t, db.Snapshot())
	final, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, final.AwaitingDeletion)
	require.Equal(t, int64(after.AwaitingDeletion), final.SegmentsRemoved-after.SegmentsRemoved)
	require.Less(t, len(rcSegFiles(t, fs, "/db")), len(files))
}
