package engine

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Issue 9, item 13: options must never make valid data unreadable or
// lost. Decoding limits come from the format (segment.FormatLimits), not
// from the options of the Open that reads.

const bigValue = 300 << 10

func bigVal(i int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, bigValue)
}

func limitOpts(fs vfs.FS, segSize int64) *Options {
	o := &Options{FS: fs, SegmentSize: segSize, Logger: discardLogger, IndexReserve: 1 << 26, CompactionThreshold: -1}
	if int64(bigValue)*2 < segSize {
		o.MaxValueSize = bigValue
	}
	return o
}

// requireBig checks that keys big0..big(n-1) read back whole, by Get and
// by ForEach.
func requireBig(t *testing.T, db *DB, n int, what string) {
	t.Helper()
	for i := range n {
		v, err := db.Get(fmt.Appendf(nil, "big%d", i))
		require.NoError(t, err, "%s: big%d", what, i)
		require.True(t, bytes.Equal(bigVal(i), v), "%s: big%d", what, i)
	}
	seen := 0
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		if bytes.HasPrefix(k, []byte("big")) {
			seen++
			require.Len(t, v, bigValue)
		}
		return nil
	}), what)
	require.Equal(t, n, seen, what)
}

// TestSmallerSegmentSizeReadsLargerRecords: 300 KiB values written with 1
// MiB segments stay readable after reopening with 64 KiB segments (Get,
// ForEach, a full replay, Verify), writes go on under the new limits,
// compaction copies the big records (into segments of their own), and
// reopening with 1 MiB again still reads everything. Before the fix the
// full replay failed with "bad value length".
func TestSmallerSegmentSizeReadsLargerRecords(t *testing.T) {
	const n = 5
	fs := vfs.NewMem()
	db, err := Open("/db", limitOpts(fs, 1<<20))
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, db.Put(fmt.Appendf(nil, "big%d", i), bigVal(i)))
	}
	require.NoError(t, db.Close())

	small := limitOpts(fs, 64<<10)
	for _, snaps := range []bool{false, true} {
		o := *small
		o.DisableSnapshots = !snaps
		db, err = Open("/db", &o)
		require.NoError(t, err, "snapshots %v", snaps)
		requireBig(t, db, n, fmt.Sprintf("64 KiB segments, snapshots %v", snaps))
		require.NoError(t, db.Close())
	}
	requireVerifyOK(t, "/db", small)

	// New writes follow the new limits; old records stay readable.
	db, err = Open("/db", small)
	require.NoError(t, err)
	require.ErrorIs(t, db.Put([]byte("new"), bigVal(0)), ErrValueTooLarge)
	for i := range 200 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "small%d", i%50), bytes.Repeat([]byte("s"), 900)))
	}
	// Compaction copies every live record, the big ones included, and a
	// big key can be overwritten and deleted.
	require.NoError(t, db.Put([]byte("big0"), []byte("now small")))
	require.NoError(t, db.Delete([]byte("big1")))
	require.NoError(t, db.Compact())
	_, err = fs.Stat("/db/" + segment.FileName(1))
	require.Error(t, err, "the first 1 MiB segment was compacted away")
	names, err := fs.List("/db")
	require.NoError(t, err)
	oversized := 0
	for _, name := range names {
		if g, ok := segment.ParseFileName(name); ok && g > 2 {
			fi, err := fs.Stat("/db/" + name)
			require.NoError(t, err)
			if fi.Size() > 64<<10 {
				oversized++
			}
		}
	}
	require.NotZero(t, oversized, "big records were copied into segments of their own")
	check := func(db *DB, what string) {
		t.Helper()
		v, err := db.Get([]byte("big0"))
		require.NoError(t, err, what)
		require.Equal(t, "now small", string(v), what)
		_, err = db.Get([]byte("big1"))
		require.ErrorIs(t, err, ErrNotFound, what)
		for i := 2; i < n; i++ {
			v, err := db.Get(fmt.Appendf(nil, "big%d", i))
			require.NoError(t, err, "%s: big%d", what, i)
			require.True(t, bytes.Equal(bigVal(i), v), "%s: big%d", what, i)
		}
		for i := range 50 {
			v, err := db.Get(fmt.Appendf(nil, "small%d", i))
			require.NoError(t, err, what)
			require.Len(t, v, 900)
		}
	}
	check(db, "after compaction")
	require.NoError(t, db.Close())
	full := *small
	full.DisableSnapshots = true
	db, err = Open("/db", &full)
	require.NoError(t, err)
	check(db, "full replay with 64 KiB segments")
	require.NoError(t, db.Close())
	db, err = Open("/db", limitOpts(fs, 1<<20))
	require.NoError(t, err)
	check(db, "reopened with 1 MiB segments")
	require.NoError(t, db.Close())
	requireVerifyOK(t, "/db", small)
}

// TestSmallerSegmentSizeCrashImage: a big record fsynced at the tail of the
// newest segment survives a crash and a reopen with smaller segments (it
// is not taken for a torn tail and truncated), and again with the larger
// size.
func TestSmallerSegmentSizeCrashImage(t *testing.T) {
	fs := vfs.NewMem()
	o := limitOpts(fs, 1<<20)
	o.Sync = SyncAlways
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("small"), []byte("x")))
	require.NoError(t, db.Put([]byte("big0"), bigVal(0))) // fsynced when Put returns
	crash := fs.CrashClone(nil)                           // power loss: only synced data
	require.NoError(t, db.Close())

	for _, size := range []int64{64 << 10, 1 << 20, 64 << 10} {
		for _, snaps := range []bool{false, true} {
			so := limitOpts(crash, size)
			so.DisableSnapshots = !snaps
			db, err := Open("/db", so)
			require.NoError(t, err, "size %d", size)
			st, err := db.Stats()
			require.NoError(t, err)
			require.Zero(t, st.TruncatedBytes, "size %d: nothing truncated", size)
			requireBig(t, db, 1, fmt.Sprintf("size %d", size))
			require.NoError(t, db.Close())
		}
	}
}

// TestLowerKeyLimitReadsLongerKeys: keys longer than a later MaxKeySize
// stay readable, and can be deleted (a delete removes data; only new data
// is limited).
func TestLowerKeyLimitReadsLongerKeys(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs, Logger: discardLogger, IndexReserve: 1 << 26, MaxKeySize: 2000, SegmentSize: 1 << 20}
	db, err := Open("/db", o)
	require.NoError(t, err)
	long := func(i int) []byte { return bytes.Repeat([]byte{byte('0' + i)}, 1500) }
	for i := range 3 {
		require.NoError(t, db.Put(long(i), []byte("v")))
	}
	require.NoError(t, db.Close())

	lo := *o
	lo.MaxKeySize = 100
	lo.DisableSnapshots = true
	db, err = Open("/db", &lo)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	for i := range 3 {
		v, err := db.Get(long(i))
		require.NoError(t, err)
		require.Equal(t, "v", string(v))
	}
	require.ErrorIs(t, db.Put(long(0), []byte("w")), ErrKeyTooLarge, "new writes follow the new limit")
	require.NoError(t, db.Delete(long(1)))
	_, err = db.Get(long(1))
	require.ErrorIs(t, err, ErrNotFound)
	// A batch's delete writes a tombstone even for an absent key: batches
	// keep the limit, so nothing new beyond it gets into the log.
	var b Batch
	b.Delete(long(2))
	require.ErrorIs(t, db.Write(&b), ErrKeyTooLarge)
	n := 0
	require.NoError(t, db.ForEach(func(k, v []byte) error { n++; return nil }))
	require.Equal(t, 2, n)
	require.NoError(t, db.Close())
	db, err = Open("/db", &lo) // full replay: the tombstone of a long key
	require.NoError(t, err)
	_, err = db.Get(long(1))
	require.ErrorIs(t, err, ErrNotFound)
	v, err := db.Get(long(2))
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
}
