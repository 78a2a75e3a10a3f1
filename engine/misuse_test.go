package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

func openMisuse(t *testing.T, fs vfs.FS, o *Options) *DB {
	t.Helper()
	if o == nil {
		o = testOpts(fs)
	}
	db, err := Open("/db", o)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func requireAbsent(t *testing.T, db *DB, keys ...[]byte) {
	t.Helper()
	for _, k := range keys {
		_, err := db.Get(k)
		require.ErrorIs(t, err, ErrNotFound, "key %q", k)
	}
}

func requireValue(t *testing.T, db *DB, k, want []byte) {
	t.Helper()
	v, err := db.Get(k)
	require.NoError(t, err, "key %.40q", k)
	require.True(t, bytes.Equal(want, v), "key %.40q: got %d bytes, want %d", k, len(v), len(want))
}

// reopenMisuse closes db and opens the same directory again.
func reopenMisuse(t *testing.T, db *DB) *DB {
	t.Helper()
	o := db.opts
	require.NoError(t, db.Close())
	db2, err := Open(db.Dir(), &o)
	require.NoError(t, err)
	t.Cleanup(func() { db2.Close() })
	return db2
}

func TestMisuseEmptyKey(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.ErrorIs(t, db.Put(nil, []byte("v")), ErrEmptyKey)
	require.ErrorIs(t, db.Put([]byte{}, []byte("v")), ErrEmptyKey)
	require.ErrorIs(t, db.PutTTL([]byte{}, []byte("v"), time.Minute), ErrEmptyKey)
	require.ErrorIs(t, db.Delete([]byte{}), ErrEmptyKey)

	for i, add := range []func(b *Batch){
		func(b *Batch) { b.Put(nil, []byte("v")) },
		func(b *Batch) { b.PutTTL([]byte{}, []byte("v"), time.Minute) },
		func(b *Batch) { b.Delete([]byte{}) },
	} {
		var b Batch
		b.Put([]byte(fmt.Sprintf("good-%d", i)), []byte("v"))
		add(&b)
		require.ErrorIs(t, db.Write(&b), ErrEmptyKey, "case %d", i)
		requireAbsent(t, db, []byte(fmt.Sprintf("good-%d", i)))
	}
	// Reads of the empty key find nothing (and do not fail otherwise).
	_, err := db.Get(nil)
	require.True(t, errors.Is(err, ErrNotFound) || errors.Is(err, ErrEmptyKey), "Get(empty): %v", err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.Keys)
	require.Zero(t, st.Puts)
	require.Zero(t, st.Batches)
}

func TestMisuseKeySize(t *testing.T) {
	for _, limit := range []int{0, 1000} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			o := testOpts(vfs.NewMem())
			o.MaxKeySize = limit
			maxLen := limit
			if maxLen == 0 {
				maxLen = 250 // the default
			}
			db := openMisuse(t, o.FS, o)
			ok := bytes.Repeat([]byte("k"), maxLen)
			big := bytes.Repeat([]byte("K"), maxLen+1)
			require.NoError(t, db.Put(ok, []byte("v1")))
			requireValue(t, db, ok, []byte("v1"))
			require.NoError(t, db.PutTTL(ok, []byte("v2"), time.Hour))
			requireValue(t, db, ok, []byte("v2"))

			require.ErrorIs(t, db.Put(big, []byte("v")), ErrKeyTooLarge)
			require.ErrorIs(t, db.PutTTL(big, []byte("v"), time.Hour), ErrKeyTooLarge)
			if len(big) > segment.MaxKeyLen {
				require.ErrorIs(t, db.Delete(big), ErrKeyTooLarge)
			} else {
				// A single Delete takes any key the format can hold (one
				// written under a larger MaxKeySize can be removed); an
				// absent key writes nothing.
				require.NoError(t, db.Delete(big))
			}
			var b Batch
			b.Put([]byte("good"), []byte("v"))
			b.Put(big, []byte("v"))
			require.ErrorIs(t, db.Write(&b), ErrKeyTooLarge)
			requireAbsent(t, db, []byte("good"), big)
			b.Reset()
			b.Delete(ok)
			b.Delete(big)
			require.ErrorIs(t, db.Write(&b), ErrKeyTooLarge)
			requireValue(t, db, ok, []byte("v2"))

			db = reopenMisuse(t, db)
			requireValue(t, db, ok, []byte("v2"))
			requireAbsent(t, db, []byte("good"), big)
			require.NoError(t, db.Delete(ok))
			requireAbsent(t, db, ok)
		})
	}
}

func TestMisuseMaxValueSize(t *testing.T) {
	for _, c := range []struct {
		name     string
		seg      int64
		maxValue int
		want     int
	}{
		{"default", 64 << 10, 0, 32 << 10}, // default: half the segment
		{"configured", 64 << 10, 100, 100},
		// Far larger than the 4 KiB write buffer: written straight to the file.
		{"large", 1 << 20, 600 << 10, 600 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := testOpts(vfs.NewMem())
			o.SegmentSize, o.MaxValueSize = c.seg, c.maxValue
			db := openMisuse(t, o.FS, o)
			maxKey := bytes.Repeat([]byte("k"), 250)
			v := bytes.Repeat([]byte("v"), c.want)
			for i := range v {
				v[i] = byte(i * 7)
			}
			require.NoError(t, db.Put(maxKey, v))
			require.NoError(t, db.PutTTL([]byte("ttl"), v, time.Hour))
			require.NoError(t, db.Put([]byte("after"), []byte("small")))
			requireValue(t, db, maxKey, v)
			requireValue(t, db, []byte("ttl"), v)
			requireValue(t, db, []byte("after"), []byte("small"))

			tooBig := append(bytes.Clone(v), 'x')
			require.ErrorIs(t, db.Put([]byte("x"), tooBig), ErrValueTooLarge)
			require.ErrorIs(t, db.PutTTL([]byte("x"), tooBig, time.Hour), ErrValueTooLarge)
			var b Batch
			b.Put([]byte("y"), []byte("fine"))
			b.Put([]byte("x"), tooBig)
			require.ErrorIs(t, db.Write(&b), ErrValueTooLarge)
			requireAbsent(t, db, []byte("x"), []byte("y"))

			require.NoError(t, db.Sync())
			requireValue(t, db, maxKey, v)
			requireValue(t, db, []byte("after"), []byte("small"))
			db = reopenMisuse(t, db)
			requireValue(t, db, maxKey, v)
			requireValue(t, db, []byte("ttl"), v)
			requireValue(t, db, []byte("after"), []byte("small"))
			requireAbsent(t, db, []byte("x"), []byte("y"))
		})
	}
}

func TestMisuseBadTTL(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.NoError(t, db.Put([]byte("k"), []byte("old")))
	for _, ttl := range []time.Duration{0, -1, -time.Hour} {
		require.ErrorIs(t, db.PutTTL([]byte("k"), []byte("new"), ttl), ErrBadTTL, "ttl %v", ttl)
		require.ErrorIs(t, db.PutTTL([]byte("fresh"), []byte("new"), ttl), ErrBadTTL, "ttl %v", ttl)
		var b Batch
		b.Put([]byte("good"), []byte("v"))
		b.PutTTL([]byte("k"), []byte("new"), ttl)
		require.ErrorIs(t, db.Write(&b), ErrBadTTL, "ttl %v", ttl)
	}
	requireValue(t, db, []byte("k"), []byte("old"))
	requireAbsent(t, db, []byte("fresh"), []byte("good"))
	// Sub-millisecond TTLs are positive: they are stored, and expire.
	require.NoError(t, db.PutTTL([]byte("short"), []byte("v"), time.Microsecond))
	time.Sleep(5 * time.Millisecond)
	requireAbsent(t, db, []byte("short"))
}

// TestMisuseBatchAtomicValidation: one bad operation anywhere in a batch
// means nothing of it is written, not even to the log.
func TestMisuseBatchAtomicValidation(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.NoError(t, db.Put([]byte("existing"), []byte("old")))
	require.NoError(t, db.Sync())
	before, err := db.Stats()
	require.NoError(t, err)
	bad := []struct {
		name string
		add  func(b *Batch)
		want error
	}{
		{"empty key", func(b *Batch) { b.Put(nil, []byte("v")) }, ErrEmptyKey},
		{"long key", func(b *Batch) { b.Delete(bytes.Repeat([]byte("k"), 251)) }, ErrKeyTooLarge},
		{"big value", func(b *Batch) { b.Put([]byte("v"), make([]byte, 32<<10+1)) }, ErrValueTooLarge},
		{"bad ttl", func(b *Batch) { b.PutTTL([]byte("t"), []byte("v"), 0) }, ErrBadTTL},
	}
	for _, c := range bad {
		for _, pos := range []string{"first", "middle", "last"} {
			var b Batch
			if pos == "first" {
				c.add(&b)
			}
			b.Put([]byte("new-1"), []byte("v"))
			b.Put([]byte("existing"), []byte("new"))
			if pos == "middle" {
				c.add(&b)
			}
			b.Delete([]byte("existing"))
			b.Put([]byte("new-2"), []byte("v"))
			if pos == "last" {
				c.add(&b)
			}
			require.ErrorIs(t, db.Write(&b), c.want, "%s %s", c.name, pos)
			requireAbsent(t, db, []byte("new-1"), []byte("new-2"))
			requireValue(t, db, []byte("existing"), []byte("old"))
		}
	}
	require.NoError(t, db.Sync())
	after, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Keys, after.Keys)
	require.Equal(t, before.Batches, after.Batches)
	require.Equal(t, before.DiskBytes, after.DiskBytes, "a refused batch wrote to the log")
	db = reopenMisuse(t, db)
	requireAbsent(t, db, []byte("new-1"), []byte("new-2"))
	requireValue(t, db, []byte("existing"), []byte("old"))

	// An empty batch is a no-op.
	var empty Batch
	require.NoError(t, db.Write(&empty))
}

func TestMisuseBatchTooLarge(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil) // 64 KiB segments
	require.NoError(t, db.Put([]byte("existing"), []byte("old")))
	require.NoError(t, db.Sync())
	before, err := db.Stats()
	require.NoError(t, err)
	var b Batch
	v := bytes.Repeat([]byte("v"), 30<<10) // each value is valid alone
	for i := range 3 {
		b.Put([]byte(fmt.Sprintf("big-%d", i)), v)
	}
	b.Delete([]byte("existing"))
	require.ErrorIs(t, db.Write(&b), ErrBatchTooLarge)
	requireAbsent(t, db, []byte("big-0"), []byte("big-1"), []byte("big-2"))
	requireValue(t, db, []byte("existing"), []byte("old"))
	require.NoError(t, db.Sync())
	after, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Batches, after.Batches)
	require.Equal(t, before.DiskBytes, after.DiskBytes, "a refused batch wrote to the log")
	require.Equal(t, len(before.Segments), len(after.Segments), "a refused batch rolled the segment")

	// Many small records that together exceed a segment are refused too.
	b.Reset()
	for i := range 3000 {
		b.Put([]byte(fmt.Sprintf("small-%04d", i)), []byte("0123456789"))
	}
	require.ErrorIs(t, db.Write(&b), ErrBatchTooLarge)
	requireAbsent(t, db, []byte("small-0000"), []byte("small-2999"))

	// The handle still works, and the same records fit in smaller batches.
	b.Reset()
	b.Put([]byte("big-0"), v)
	require.NoError(t, db.Write(&b))
	requireValue(t, db, []byte("big-0"), v)
	db = reopenMisuse(t, db)
	requireValue(t, db, []byte("big-0"), v)
	requireAbsent(t, db, []byte("big-1"), []byte("small-0000"))
	requireValue(t, db, []byte("existing"), []byte("old"))
}

func TestMisuseDeleteAbsent(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.NoError(t, db.Put([]byte("a"), []byte("1")))
	before, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.Delete([]byte("never-written")))
	require.NoError(t, db.Delete([]byte("a")))
	mid, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.Delete([]byte("a"))) // already deleted
	after, err := db.Stats()
	require.NoError(t, err)
	// Deleting an absent key writes nothing.
	require.Equal(t, before.Segments[len(before.Segments)-1].Size+int64(segment.Size(1, 0, false)),
		after.Segments[len(after.Segments)-1].Size)
	require.Equal(t, mid.Segments, after.Segments)
	require.Equal(t, mid.Deletes, after.Deletes)
	requireAbsent(t, db, []byte("a"), []byte("never-written"))
	db = reopenMisuse(t, db)
	requireAbsent(t, db, []byte("a"), []byte("never-written"))
}

func TestMisuseViewAndCopies(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.NoError(t, db.Put([]byte("k"), []byte("value")))
	sentinel := errors.New("callback failed")
	called := false
	err := db.View([]byte("k"), func(v []byte) error {
		called = true
		require.Equal(t, "value", string(v))
		return fmt.Errorf("wrapped: %w", sentinel)
	})
	require.ErrorIs(t, err, sentinel)
	require.True(t, called)
	called = false
	err = db.View([]byte("absent"), func([]byte) error { called = true; return nil })
	require.ErrorIs(t, err, ErrNotFound)
	require.False(t, called)

	// Get and AppendValue return copies, whether the record is still in the
	// write buffer or already in the file.
	for _, phase := range []string{"buffered", "synced"} {
		if phase == "synced" {
			require.NoError(t, db.Sync())
		}
		v, err := db.Get([]byte("k"))
		require.NoError(t, err)
		for i := range v {
			v[i] = 'X'
		}
		buf, err := db.AppendValue(make([]byte, 0, 64), []byte("k"))
		require.NoError(t, err)
		require.Equal(t, "value", string(buf), phase)
		for i := range buf {
			buf[i] = 'Y'
		}
		requireValue(t, db, []byte("k"), []byte("value"))
		require.NoError(t, db.View([]byte("k"), func(v []byte) error {
			require.Equal(t, "value", string(v), phase)
			return nil
		}))
	}
	// AppendValue on a miss returns dst unchanged.
	dst := []byte("keep")
	out, err := db.AppendValue(dst, []byte("absent"))
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, "keep", string(out))
}

func TestMisuseAfterClose(t *testing.T) {
	db := openMisuse(t, vfs.NewMem(), nil)
	require.NoError(t, db.Put([]byte("k"), []byte("v")))
	early := db.NewIterator() // created while open, used after Close
	started := db.NewIterator()
	require.True(t, started.Next())

	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "a second Close returns nil")

	_, err := db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	dst := []byte("dst")
	out, err := db.AppendValue(dst, []byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, "dst", string(out))
	called := false
	require.ErrorIs(t, db.View([]byte("k"), func([]byte) error { called = true; return nil }), ErrClosed)
	require.False(t, called)
	ok, err := db.Has([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	require.False(t, ok)
	require.ErrorIs(t, db.Put([]byte("k"), []byte("v")), ErrClosed)
	require.ErrorIs(t, db.PutTTL([]byte("k"), []byte("v"), time.Hour), ErrClosed)
	require.ErrorIs(t, db.Delete([]byte("k")), ErrClosed)
	var b Batch
	b.Put([]byte("k"), []byte("v"))
	require.ErrorIs(t, db.Write(&b), ErrClosed)
	require.ErrorIs(t, db.Write(&Batch{}), ErrClosed)
	require.ErrorIs(t, db.Sync(), ErrClosed)
	require.ErrorIs(t, db.Compact(), ErrClosed)
	_, err = db.Stats()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, db.ForEach(func(k, v []byte) error { return nil }), ErrClosed)
	// Bad arguments after Close: ErrClosed or the argument error, but no
	// panic.
	require.Error(t, db.Put(nil, nil))

	for name, it := range map[string]*Iterator{"early": early, "started": started, "late": db.NewIterator()} {
		require.False(t, it.Next(), name)
		require.ErrorIs(t, it.Err(), ErrClosed, name)
		require.False(t, it.Next(), name)
		require.ErrorIs(t, it.Err(), ErrClosed, name)
		require.NoError(t, it.Close(), name)
	}
}

func TestMisuseLocked(t *testing.T) {
	for _, name := range []string{"mem", "os"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir := "/db"
			if name == "os" {
				fs, dir = vfs.Default, filepath.Join(t.TempDir(), "db")
			}
			o := testOpts(fs)
			db, err := Open(dir, o)
			require.NoError(t, err)
			require.NoError(t, db.Put([]byte("k"), []byte("v1")))

			for range 2 {
				db2, err := Open(dir, o)
				require.ErrorIs(t, err, ErrLocked)
				require.Nil(t, db2)
			}
			// The failed Opens disturbed nothing.
			require.NoError(t, db.Put([]byte("k"), []byte("v2")))
			requireValue(t, db, []byte("k"), []byte("v2"))
			require.NoError(t, db.Close())

			db, err = Open(dir, o)
			require.NoError(t, err)
			requireValue(t, db, []byte("k"), []byte("v2"))
			_, err = Open(dir, o)
			require.ErrorIs(t, err, ErrLocked)
			require.NoError(t, db.Close())
		})
	}
}

func TestMisuseBadOptions(t *testing.T) {
	fs := vfs.NewMem()
	base := func() Options { return *testOpts(fs) }
	cases := map[string]func(o *Options){
		"segment too small":            func(o *Options) { o.SegmentSize = 4<<10 - 1 },
		"segment tiny":                 func(o *Options) { o.SegmentSize = 512; o.WriteBufferSize = 0 },
		"segment negative":             func(o *Options) { o.SegmentSize = -1 },
		"segment too large":            func(o *Options) { o.SegmentSize = segment.MaxSegmentSize + 1; o.WriteBufferSize = 0 },
		"segment far too large":        func(o *Options) { o.SegmentSize = 1 << 40; o.WriteBufferSize = 0 },
		"key limit too large":          func(o *Options) { o.MaxKeySize = 70000 },
		"key limit just too large":     func(o *Options) { o.MaxKeySize = segment.MaxKeyLen + 1 },
		"key limit negative":           func(o *Options) { o.MaxKeySize = -1 },
		"value limit negative":         func(o *Options) { o.MaxValueSize = -1 },
		"value limit beyond segment":   func(o *Options) { o.MaxValueSize = 64 << 10 },
		"record beyond segment":        func(o *Options) { o.SegmentSize = 4 << 10; o.MaxValueSize = 4000 },
		"key limit beyond segment":     func(o *Options) { o.SegmentSize = 4 << 10; o.MaxKeySize = 5000; o.MaxValueSize = 1 },
		"unknown sync mode":            func(o *Options) { o.Sync = SyncNone + 1 },
		"negative sync mode":           func(o *Options) { o.Sync = -1 },
		"negative sync interval":       func(o *Options) { o.SyncInterval = -time.Second },
		"write buffer too small":       func(o *Options) { o.WriteBufferSize = 100 },
		"write buffer beyond segment":  func(o *Options) { o.WriteBufferSize = 128 << 10 },
		"index reserve too small":      func(o *Options) { o.IndexReserve = 1 << 20 },
		"compaction threshold above 1": func(o *Options) { o.CompactionThreshold = 1.5 },
		"compaction rate negative":     func(o *Options) { o.CompactionRate = -1 },
		"index reserve negative":       func(o *Options) { o.IndexReserve = -1 },
		"value limit huge":             func(o *Options) { o.MaxValueSize = 1 << 30 },
		"value limit near MaxInt":      func(o *Options) { o.MaxValueSize = math.MaxInt - 3 },
		"value limit MaxInt":           func(o *Options) { o.MaxValueSize = math.MaxInt },
		"compaction threshold NaN":     func(o *Options) { o.CompactionThreshold = math.NaN() },
		"compaction threshold +Inf":    func(o *Options) { o.CompactionThreshold = math.Inf(1) },
		"compaction threshold -Inf":    func(o *Options) { o.CompactionThreshold = math.Inf(-1) },
		"sync interval 1ns":            func(o *Options) { o.SyncInterval = time.Nanosecond },
		"snapshot interval 1ns":        func(o *Options) { o.SnapshotInterval = time.Nanosecond },
		"snapshot interval negative":   func(o *Options) { o.SnapshotInterval = -time.Second },
		"snapshot records negative":    func(o *Options) { o.SnapshotRecords = -1 },
		"snapshot log ratio NaN":       func(o *Options) { o.SnapshotLogRatio = math.NaN() },
		"snapshot log ratio +Inf":      func(o *Options) { o.SnapshotLogRatio = math.Inf(1) },
		"expiry interval 1ns":          func(o *Options) { o.ExpiryInterval = time.Nanosecond },
		"expiry budget negative":       func(o *Options) { o.ExpiryBudget = -1 },
	}
	for name, mutate := range cases {
		o := base()
		mutate(&o)
		db, err := Open("/bad", &o)
		require.ErrorIs(t, err, ErrBadOptions, name)
		require.Nil(t, db, name)
	}
	// A refused Open leaves no lock behind.
	db, err := Open("/bad", testOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Close())

	// Zero values select the defaults, and the boundaries are accepted.
	good := map[string]func(o *Options){
		"all defaults":       func(o *Options) { *o = Options{FS: fs, SegmentSize: 64 << 10, Logger: discardLogger} },
		"key limit 0":        func(o *Options) { o.MaxKeySize = 0 },
		"key limit max":      func(o *Options) { o.SegmentSize = 1 << 20; o.MaxKeySize = segment.MaxKeyLen },
		"min segment":        func(o *Options) { o.SegmentSize = 4 << 10; o.WriteBufferSize = 4 << 10 },
		"value limit 0":      func(o *Options) { o.MaxValueSize = 0 },
		"no compaction":      func(o *Options) { o.CompactionThreshold = -1 },
		"compaction at 1":    func(o *Options) { o.CompactionThreshold = 1 },
		"write buffer = seg": func(o *Options) { o.WriteBufferSize = 64 << 10 },
		"no expirer":         func(o *Options) { o.ExpiryInterval = -1 },
		"shortest intervals": func(o *Options) {
			o.SyncInterval, o.SnapshotInterval, o.ExpiryInterval = time.Millisecond, 10*time.Millisecond, 10*time.Millisecond
			o.SnapshotLogRatio = -1
		},
	}
	for name, mutate := range good {
		o := base()
		mutate(&o)
		db, err := Open("/good", &o)
		require.NoError(t, err, name)
		require.NoError(t, db.Put([]byte("k"), []byte("v")), name)
		require.NoError(t, db.Close(), name)
	}

	// The largest segment size, on the OS filesystem (a MemFS would
	// allocate the whole mapping).
	o := base()
	o.FS, o.SegmentSize = vfs.Default, segment.MaxSegmentSize
	db, err = Open(t.TempDir(), &o)
	require.NoError(t, err, "max segment")
	require.NoError(t, db.Put([]byte("k"), []byte("v")))
	require.NoError(t, db.Close())

	_, err = ParseSyncMode("sometimes")
	require.ErrorIs(t, err, ErrBadOptions)
	for m := SyncGroup; m <= SyncNone; m++ {
		got, err := ParseSyncMode(m.String())
		require.NoError(t, err)
		require.Equal(t, m, got)
		got, err = ParseSyncMode(" " + strings.ToUpper(m.String()))
		require.NoError(t, err, "case and surrounding space do not matter")
		require.Equal(t, m, got)
	}
}

func TestMisuseOpenEmptyDir(t *testing.T) {
	db, err := Open("", testOpts(vfs.NewMem()))
	require.Error(t, err)
	require.ErrorIs(t, err, ErrBadOptions)
	require.Nil(t, db)
	db, err = Open("", nil)
	require.Error(t, err)
	require.Nil(t, db)
	// Nothing was created in the working directory.
	_, statErr := os.Stat(LockFileName)
	require.True(t, os.IsNotExist(statErr), "Open(\"\") created %s", LockFileName)
}
