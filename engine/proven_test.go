package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestLogEnds: what recovery computes for a repair plan. The newest
// segment cut by 100 bytes below the snapshot's recorded size (issue 9,
// item 10: "truncate -s -100") is not a torn tail: the end of its valid
// log is the last whole record before the cut, and the snapshot proves the
// lost bytes were fsynced. Without a snapshot or sync mark proving it, the
// same cut is a torn tail that Open truncates at that same offset.
func TestLogEnds(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", rpOpts(fs))
	require.NoError(t, err)
	rcPut(t, db, 0, 200)
	require.NoError(t, db.Snapshot())
	crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 2))) // no Close mark
	require.NoError(t, db.Close())

	ends, err := LogEnds("/db", rpOpts(crashed))
	require.NoError(t, err)
	require.Empty(t, ends, "an intact log")

	files := rcSegFiles(t, crashed, "/db")
	newest := files[len(files)-1]
	size := rcSize(t, crashed, newest)
	recs := rcLayout(t, rcRead(t, crashed, newest), rcGen(t, newest))
	rcTruncate(t, crashed, newest, size-100)
	wantEnd := int64(0)
	for _, r := range recs {
		if r.off+int64(r.size) <= size-100 {
			wantEnd = r.off + int64(r.size)
		}
	}
	ends, err = LogEnds("/db", rpOpts(crashed))
	require.NoError(t, err)
	require.Len(t, ends, 1)
	e := ends[0]
	require.Equal(t, newest, e.File)
	require.Equal(t, size-100, e.Size)
	require.Equal(t, wantEnd, e.End)
	require.Equal(t, size, e.Proven, "the snapshot proves the whole segment was fsynced")
	require.False(t, e.TornTail)
	_, err = Open("/db", rpOpts(crashed))
	require.ErrorIs(t, err, ErrCorrupt, "Open never drops fsynced data silently")

	// Without the snapshot nothing proves it: a torn tail, cut at End.
	o := rpOpts(crashed)
	o.DisableSnapshots = true
	for _, n := range mustList(crashed) {
		if _, ok := parseSnapName(n); ok {
			require.NoError(t, crashed.Remove("/db/"+n))
		}
	}
	ends, err = LogEnds("/db", o)
	require.NoError(t, err)
	require.Len(t, ends, 1)
	require.True(t, ends[0].TornTail)
	require.Equal(t, wantEnd, ends[0].End)
	require.Zero(t, ends[0].Proven)
	db, err = Open("/db", o)
	require.NoError(t, err)
	require.Equal(t, wantEnd, rcSize(t, crashed, newest), "Open cuts where LogEnds said")
	require.NoError(t, db.Close())
}
