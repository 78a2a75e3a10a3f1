package engine

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// faultFixture writes keys k0.. with 1000-byte values on the OS filesystem
// so that the first segment is sealed, reopens the directory, and then
// truncates the first segment file to 8 KiB underneath the open DB, the way
// a failing disk makes pages unreadable: reading a page wholly past the new
// end through the mapping raises SIGBUS. It returns the DB, the segment's
// name, and a key before and a key past the cut.
func faultFixture(t *testing.T, readOnly bool) (db *DB, seg string, before, after []byte) {
	dir := t.TempDir()
	o := &Options{FS: vfs.Default, SegmentSize: 64 << 10, Sync: SyncNone, Logger: discardLogger,
		CompactionThreshold: -1, ExpiryInterval: -1}
	db, err := Open(dir, o)
	require.NoError(t, err)
	val := make([]byte, 1000)
	for i := range 150 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), val))
	}
	require.NoError(t, db.Close())
	ro := *o
	ro.ReadOnly = readOnly
	db, err = Open(dir, &ro)
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Greater(t, len(st.Segments), 1)
	seg = st.Segments[0].Name
	for _, s := range st.Segments {
		if s.Generation < st.Segments[0].Generation {
			seg = s.Name
		}
	}
	require.NoError(t, os.Truncate(seg, 8192))
	return db, seg, []byte("k0"), []byte("k30")
}

// TestReadFaultIsAnError: before the fix, the Get past the cut killed the
// test binary with "unexpected fault address" (SIGBUS).
func TestReadFaultIsAnError(t *testing.T) {
	for _, readOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("readonly=%v", readOnly), func(t *testing.T) {
			db, seg, before, after := faultFixture(t, readOnly)
			defer db.Close()

			_, err := db.Get(after)
			require.ErrorIs(t, err, ErrIO)
			require.ErrorContains(t, err, seg)
			require.ErrorContains(t, err, "at offset")

			dst := []byte("prefix")
			out, err := db.AppendValue(dst, after)
			require.ErrorIs(t, err, ErrIO)
			require.Equal(t, "prefix", string(out))

			_, err = db.Has(after)
			require.ErrorIs(t, err, ErrIO)

			called := false
			err = db.View(after, func([]byte) error { called = true; return nil })
			require.ErrorIs(t, err, ErrIO)
			require.False(t, called)

			// Keys before the cut, and in other segments, still read.
			v, err := db.Get(before)
			require.NoError(t, err)
			require.Len(t, v, 1000)
			v, err = db.Get([]byte("k149"))
			require.NoError(t, err)
			require.Len(t, v, 1000)

			// A plain walk stops at the fault with the error...
			err = db.ForEach(func(k, v []byte) error { return nil })
			require.ErrorIs(t, err, ErrIO)

			// ...and a salvaging walk skips it and yields every other pair.
			it := db.NewIteratorWith(IterOptions{SkipCorrupt: true})
			n := 0
			for it.Next() {
				n++
			}
			require.NoError(t, it.Err())
			sk := it.Skipped()
			require.Positive(t, sk.Count)
			require.EqualValues(t, 150, int64(n)+sk.Count)
			require.Equal(t, seg, sk.Records[0].File)
			require.ErrorIs(t, sk.Records[0].Err, ErrIO)
		})
	}
}

// TestViewFaultInCallback: a fault while fn itself reads the mapped value
// becomes View's error; another panic in fn passes through unchanged.
func TestViewFaultInCallback(t *testing.T) {
	dir := t.TempDir()
	o := &Options{FS: vfs.Default, SegmentSize: 64 << 10, Sync: SyncNone, Logger: discardLogger}
	db, err := Open(dir, o)
	require.NoError(t, err)
	big := make([]byte, 20000) // spans pages
	for i := range big {
		big[i] = byte(i)
	}
	require.NoError(t, db.Put([]byte("small"), []byte("v"))) // stays in the first page
	require.NoError(t, db.Put([]byte("big"), big))
	require.NoError(t, db.Sync()) // flushed: read through the mapping
	st, err := db.Stats()
	require.NoError(t, err)
	seg := st.Segments[0].Name
	err = db.View([]byte("big"), func(v []byte) error {
		require.NoError(t, os.Truncate(seg, 4096))
		sum := 0
		for _, b := range v { // faults past the first page
			sum += int(b)
		}
		return fmt.Errorf("read %d bytes without a fault", sum)
	})
	require.ErrorIs(t, err, ErrIO)
	require.ErrorContains(t, err, seg)

	boom := errors.New("boom")
	require.PanicsWithValue(t, boom, func() {
		_ = db.View([]byte("small"), func([]byte) error { panic(boom) })
	})
	_ = db.Close()
}

// TestCompactionReadFault: compaction reading a segment whose pages are
// gone does not kill the process (before the fix: SIGBUS); it skips the
// segment as damaged (keeping its file), the pass goes on, and reads of
// other keys go on.
func TestCompactionReadFault(t *testing.T) {
	db, seg, before, _ := faultFixture(t, false)
	defer db.Close()
	require.NoError(t, db.Put(before, []byte("new"))) // dead bytes in the damaged segment
	require.NoError(t, db.Compact())
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, 1, st.DamagedSegments)
	require.Positive(t, st.CompactionSkippedBytes)
	_, err = os.Stat(seg)
	require.NoError(t, err, "the damaged segment's file is kept")
	v, err := db.Get(before)
	require.NoError(t, err)
	require.Equal(t, "new", string(v))
}
