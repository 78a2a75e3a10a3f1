package engine

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestGroupSyncVsCompactionClose: the group-commit flusher picks the active
// segment, releases db.mu and is held (by a hook) just before its fsync;
// meanwhile Compact seals that segment and compacts it away. Before the
// fix, compaction closed the file and the flusher's fsync then failed with
// "file already closed", failing the handle for good. Now the retirement
// waits for the fsync: the test releases the flusher once compaction is
// waiting in the guard's grace period (the epoch moved), or once Compact
// returned (which only happens without the fix).
func TestGroupSyncVsCompactionClose(t *testing.T) {
	o := testOpts(vfs.NewMem())
	o.Sync = SyncGroup
	o.CompactionThreshold = -1
	o.DisableSnapshots = true
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("k"), []byte("v1")))
	require.NoError(t, db.Put([]byte("k"), []byte("v2"))) // dead bytes: Compact seals and rewrites

	inWindow := make(chan *segFile, 1)
	release := make(chan struct{})
	armed := true
	groupSyncHook = func(sf *segFile) {
		if armed {
			armed = false // only the flusher goroutine runs the hook
			inWindow <- sf
			<-release
		}
	}
	defer func() { groupSyncHook = nil }()

	putDone := make(chan error, 1)
	go func() { putDone <- db.Put([]byte("k"), []byte("v3")) }()
	sf := <-inWindow
	require.Equal(t, db.active, sf)

	e0 := db.guard.epoch.Load()
	compactDone := make(chan error, 1)
	go func() { compactDone <- db.Compact() }()
	var cerr error
	compacted := false
wait:
	for {
		select {
		case cerr = <-compactDone:
			compacted = true
			break wait
		default:
			if db.guard.epoch.Load() != e0 {
				break wait // the retirement waits for operations in flight
			}
		}
	}
	close(release)
	if !compacted {
		cerr = <-compactDone
	}
	require.NoError(t, cerr)
	require.NoError(t, <-putDone)
	require.NotSame(t, sf, db.segs[sf.id].Load(), "the segment was compacted away")
	// The handle has not failed: a group-commit write works.
	require.NoError(t, db.Put([]byte("k2"), []byte("v")))
	v, err := db.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, "v3", string(v))
}
