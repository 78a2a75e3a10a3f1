package engine

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestSnapshotLoadParallel: a snapshot of several entry frames loads, in
// parallel, into the same index a full replay builds; one whose frames are
// each intact but out of shard order (two swapped) is refused, which only
// the reader's check across the workers' frame ranges can see, and Open
// falls back to a full replay.
func TestSnapshotLoadParallel(t *testing.T) {
	const keys = 300_000 // 2.4 MB of entries: 3 frames
	fs := vfs.NewMem()
	o := &Options{FS: fs, SegmentSize: 1 << 20, WriteBufferSize: 64 << 10, Sync: SyncNone,
		Logger: discardLogger, IndexReserve: 1 << 28, CompactionThreshold: -1, ExpiryInterval: -1,
		SnapshotInterval: 1 << 40, SnapshotRecords: 1 << 40}
	db, err := Open("/db", o)
	require.NoError(t, err)
	var b Batch
	k := make([]byte, 16)
	for i := range keys {
		b.Put(benchKey(k, uint64(i)), binary.LittleEndian.AppendUint64(nil, uint64(i)))
		if b.Len() == 1000 {
			require.NoError(t, db.Write(&b))
			b.Reset()
		}
	}
	require.NoError(t, db.Close())

	check := func(fromSnapshot bool) {
		t.Helper()
		db, err := Open("/db", o)
		require.NoError(t, err)
		defer db.Close()
		st, err := db.Stats()
		require.NoError(t, err)
		require.Equal(t, fromSnapshot, st.OpenedFromSnapshot)
		require.Equal(t, int64(keys), db.ix.Len())
		require.NoError(t, db.ix.Check())
		for i := 0; i < keys; i += 997 {
			v, err := db.Get(benchKey(k, uint64(i)))
			require.NoError(t, err)
			require.Equal(t, uint64(i), binary.LittleEndian.Uint64(v))
		}
	}
	check(true)

	snaps := snapshotFiles(t, fs)
	require.Len(t, snaps, 1)
	name := "/db/" + snaps[0]
	data := readFile(t, fs, name)
	f, err := fs.Open(name)
	require.NoError(t, err)
	sf, err := readSnapshotHead(f, name)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	var frames [][]byte
	for off := sf.entriesAt; off < sf.trailerAt; {
		n := int64(binary.LittleEndian.Uint32(data[off:]))
		frames = append(frames, data[off:off+8+n])
		off += 8 + n
	}
	require.GreaterOrEqual(t, len(frames), 3)
	swapped := bytes.Clone(data[:sf.entriesAt])
	swapped = append(swapped, frames[1]...)
	swapped = append(swapped, frames[0]...)
	for _, fr := range frames[2:] {
		swapped = append(swapped, fr...)
	}
	swapped = append(swapped, data[sf.trailerAt:]...)
	require.Len(t, swapped, len(data))
	writeFile(t, fs, name, swapped)
	check(false)
}
