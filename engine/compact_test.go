package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestCompactSpace: after overwriting every key three times and deleting
// half, a full compaction brings disk use to at most 1.5 times the live
// data, and every answer stays right across a reopen.
func TestCompactSpace(t *testing.T) {
	fs := vfs.NewMem()
	o := testOpts(fs)
	o.CompactionThreshold = -1 // only the explicit pass
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n = 4000
	val := func(i, v int) []byte { return fmt.Appendf(nil, "value-%d-%d-%0100d", i, v, 0) }
	for v := range 3 {
		for i := range n {
			require.NoError(t, db.Put(fmt.Appendf(nil, "key-%d", i), val(i, v)))
		}
	}
	for i := 0; i < n; i += 2 {
		require.NoError(t, db.Delete(fmt.Appendf(nil, "key-%d", i)))
	}
	check := func(db *DB) {
		for i := range n {
			got, err := db.Get(fmt.Appendf(nil, "key-%d", i))
			if i%2 == 0 {
				require.ErrorIs(t, err, ErrNotFound, i)
				continue
			}
			require.NoError(t, err, i)
			require.Equal(t, string(val(i, 2)), string(got))
		}
	}
	before, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.Compact())
	after, err := db.Stats()
	require.NoError(t, err)
	check(db)
	require.Greater(t, after.SegmentsRemoved, int64(0))
	require.LessOrEqual(t, float64(after.DiskBytes), 1.5*float64(after.LiveBytes),
		"disk %d live %d (before: disk %d live %d)", after.DiskBytes, after.LiveBytes, before.DiskBytes, before.LiveBytes)
	require.Equal(t, before.Keys, after.Keys)
	require.NoError(t, db.Close())

	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	check(db)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, after.Keys, st.Keys)
	require.Equal(t, after.LiveBytes, st.LiveBytes)
}
