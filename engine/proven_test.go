package engine

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
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
	deleteSnapshots(t, crashed, "/db")
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

// TestLogEndsAgreeWithOpen: for each kind of damage, LogEnds (and so the
// repair plan) reports the segment, and calls it a torn tail exactly when
// a writable Open cuts (or removes) it by itself and succeeds; otherwise
// Open fails with ErrCorrupt. Before LogEnds and PlanRepair shared one
// scan (which failed before), LogEnds missed a damaged header, a sealed
// segment cut inside its padding and a segment torn at creation, and
// called another database's segment a torn tail.
func TestLogEndsAgreeWithOpen(t *testing.T) {
	newest := func(files []string) string { return files[len(files)-1] }
	cases := []struct {
		name   string
		damage func(t *testing.T, fs *vfs.MemFS, files []string)
		torn   bool // Open cuts it by itself
		header bool // no cut repairs it
	}{
		{"newest header damaged", func(t *testing.T, fs *vfs.MemFS, files []string) {
			data := rcRead(t, fs, newest(files))
			data[0] ^= 0xff
			rcWrite(t, fs, newest(files), data)
		}, false, true},
		{"another database's segment", func(t *testing.T, fs *vfs.MemFS, files []string) {
			o := rcOpts(fs, 4096)
			db, err := Open("/other", o)
			require.NoError(t, err)
			rcPut(t, db, 0, 3)
			require.NoError(t, db.Close())
			other := rcSegFiles(t, fs, "/other")
			rcWrite(t, fs, filepath.Join(rcDir, segment.FileName(rcGen(t, newest(files))+1)), rcRead(t, fs, other[0]))
		}, false, true},
		{"sealed segment cut inside its padding", func(t *testing.T, fs *vfs.MemFS, files []string) {
			data := rcRead(t, fs, files[0])
			recs := rcLayout(t, data, rcGen(t, files[0]))
			for _, r := range recs[len(recs)/2:] {
				if end := r.valOff + int64(len(r.value)); end < r.off+int64(r.size) {
					rcWrite(t, fs, files[0], data[:end])
					return
				}
			}
			t.Fatal("no record with padding")
		}, false, false},
		{"newest proven by a snapshot, cut short", func(t *testing.T, fs *vfs.MemFS, _ []string) {
			o := rcOpts(fs, 4096)
			o.DisableSnapshots = false
			db, err := Open(rcDir, o)
			require.NoError(t, err)
			rcPut(t, db, 120, 130)
			require.NoError(t, db.Snapshot())
			require.NoError(t, db.Close())
			last := newest(rcSegFiles(t, fs, rcDir))
			rcStripCloseMark(t, fs, rcDir)
			rcTruncate(t, fs, last, rcSize(t, fs, last)-5)
		}, false, false},
		{"newest torn tail", func(t *testing.T, fs *vfs.MemFS, files []string) {
			rcStripCloseMark(t, fs, rcDir)
			rcTruncate(t, fs, newest(files), rcSize(t, fs, newest(files))-5)
		}, true, false},
		{"newest torn at creation", func(t *testing.T, fs *vfs.MemFS, files []string) {
			rcWrite(t, fs, filepath.Join(rcDir, segment.FileName(rcGen(t, newest(files))+1)), make([]byte, segment.HeaderSize))
		}, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, files := rcMultiSegment(t, 120)
			c.damage(t, fs, files)
			ends, err := LogEnds(rcDir, &Options{FS: fs})
			require.NoError(t, err)
			require.Len(t, ends, 1)
			e := ends[0]
			require.Equal(t, c.torn, e.TornTail, "%+v", e)
			plan, err := PlanRepair(rcDir, &Options{FS: fs})
			require.NoError(t, err)
			switch {
			case c.header:
				require.Len(t, plan.Unrepairable, 1)
				require.Empty(t, plan.Cuts)
			case c.torn && e.End == 0:
				require.Empty(t, plan.Cuts, "Open removes a segment torn at creation")
			default:
				require.Len(t, plan.Cuts, 1)
				require.Equal(t, e.End, plan.Cuts[0].Offset, "the plan cuts where LogEnds says")
				require.Equal(t, e.TornTail, plan.Cuts[0].TornTail)
				require.Equal(t, e.Proven, plan.Cuts[0].Proven)
			}

			o := rcOpts(fs, 4096)
			o.DisableSnapshots = false
			db, err := Open(rcDir, o)
			if !c.torn {
				require.ErrorIs(t, err, ErrCorrupt)
				return
			}
			require.NoError(t, err)
			require.NoError(t, db.Close())
			if e.End == 0 {
				require.NotContains(t, rcSegFiles(t, fs, rcDir), e.File, "removed as a torn creation")
			} else {
				require.Equal(t, e.End, rcSize(t, fs, e.File), "Open cuts where LogEnds said")
			}
		})
	}
}
