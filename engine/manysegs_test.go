package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestLocationBudget: the segment id and offset fill the index slot's
// location bits exactly.
func TestLocationBudget(t *testing.T) {
	require.Equal(t, index.LocBits, segment.IDBits+segment.OffsetBits)
	require.Equal(t, uint64(index.LocMask), segment.Loc(segment.MaxSegments-1, segment.MaxSegmentSize-segment.Align))
}

// TestMoreSegmentsThanTheOldLimit builds a database of 4 KiB segments with
// more than 1100 live segments (the old location format had 1024 ids),
// then reads every key back in the open handle, after a reopen from the
// snapshot Close writes, and after a reopen that replays the whole log.
func TestMoreSegmentsThanTheOldLimit(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs, SegmentSize: 4096, WriteBufferSize: 4096, Sync: SyncNone,
		Logger: discardLogger, CompactionThreshold: -1, ExpiryInterval: -1,
		SnapshotInterval: 1 << 40, SnapshotRecords: 1 << 40}
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n = 40_000 // 128-byte records: 31 a segment, about 1300 segments
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }
	val := func(i int) []byte { return fmt.Appendf(nil, "%0100d", i) }
	for i := 0; i < n; i += 10 { // half single puts, half batches
		if i%20 == 0 {
			for j := i; j < i+10; j++ {
				require.NoError(t, db.Put(key(j), val(j)))
			}
			continue
		}
		var b Batch
		for j := i; j < i+10; j++ {
			b.Put(key(j), val(j))
		}
		require.NoError(t, db.Write(&b))
	}
	maxID := 0
	for _, s := range statsOrFail(t, db).Segments {
		maxID = max(maxID, int(s.ID))
	}
	segs := len(statsOrFail(t, db).Segments)
	t.Logf("%d keys in %d segments, highest id %d", n, segs, maxID)
	require.Greater(t, segs, 1100)
	require.GreaterOrEqual(t, maxID, 1100)

	check := func(db *DB) {
		t.Helper()
		st := statsOrFail(t, db)
		require.Equal(t, int64(n), st.Keys)
		require.Len(t, st.Segments, segs)
		for i := 0; i < n; i++ {
			v, err := db.Get(key(i))
			require.NoError(t, err, "key %d", i)
			require.Equal(t, val(i), v)
		}
		// Iteration and verification read every location too.
		seen := 0
		require.NoError(t, db.ForEach(func(k, v []byte) error { seen++; return nil }))
		require.Equal(t, n, seen)
		require.NoError(t, db.ix.Check())
	}
	check(db)
	require.NoError(t, db.Close())

	db, err = Open("/db", o)
	require.NoError(t, err)
	require.True(t, db.st.snapshotLoaded.Load(), "opened from the snapshot")
	check(db)
	// Overwrite a key in the highest segment: its old location (id > 1023)
	// is found and superseded.
	require.NoError(t, db.Put(key(n-1), []byte("new")))
	require.NoError(t, db.Close())

	o.DisableSnapshots = true // Open replays the whole log
	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.False(t, db.st.snapshotLoaded.Load())
	require.Equal(t, int64(n), statsOrFail(t, db).Keys)
	v, err := db.Get(key(n - 1))
	require.NoError(t, err)
	require.Equal(t, "new", string(v))
	for i := 0; i < n-1; i++ {
		v, err := db.Get(key(i))
		require.NoError(t, err, "key %d", i)
		require.Equal(t, val(i), v)
	}
}
