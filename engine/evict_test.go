package engine

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marlinkv/marlin/vfs"
	"github.com/stretchr/testify/require"
)

// cacheOpts is a small cache-mode database: 64 KiB segments, a 1 MiB
// limit, no background passes (the tests call evictPass themselves; a
// roll may still wake the compactor, which only serializes with them).
func cacheOpts(fs vfs.FS) *Options {
	o := testOpts(fs)
	o.MaxDiskBytes = 1 << 20
	o.CompactionThreshold = -1
	o.CompactionInterval = time.Hour
	o.manualEvict = true
	return o
}

func cacheKey(i int) []byte { return fmt.Appendf(nil, "key-%06d", i) }

func cacheValue(i int) []byte {
	return fmt.Appendf(nil, "%06d-%s", i, strings.Repeat("v", 290))
}

// dirBytes is the size of every file in dir.
func dirBytes(t *testing.T, fs vfs.FS, dir string) int64 {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	var n int64
	for _, name := range names {
		fi, err := fs.Stat(path.Join(dir, name))
		require.NoError(t, err)
		n += fi.Size()
	}
	return n
}

// putRange writes keys [from, to) and runs an eviction pass every 500,
// then every.
func putRange(t *testing.T, db *DB, from, to int, every func(i int)) {
	t.Helper()
	for i := from; i < to; i++ {
		require.NoError(t, db.Put(cacheKey(i), cacheValue(i)))
		if i%500 == 499 {
			require.NoError(t, db.evictPass())
			if every != nil {
				every(i)
			}
		}
	}
	require.NoError(t, db.evictPass())
}

// present returns which of keys [0, n) read back, checking each value.
func present(t *testing.T, db *DB, n int) []bool {
	t.Helper()
	out := make([]bool, n)
	for i := range n {
		v, err := db.Get(cacheKey(i))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, cacheValue(i), v, "key %d", i)
		out[i] = true
	}
	return out
}

func TestCacheModeBoundsDisk(t *testing.T) {
	fs := vfs.NewMem()
	o := cacheOpts(fs)
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n = 12000 // about 3.7 MiB of records against a 1 MiB limit
	putRange(t, db, 0, n, func(int) {
		require.NoError(t, db.Sync())
		require.LessOrEqual(t, dirBytes(t, fs, "/db"), o.MaxDiskBytes, "after each pass")
	})
	require.LessOrEqual(t, dirBytes(t, fs, "/db"), o.MaxDiskBytes)

	got := present(t, db, n)
	missing := 0
	for _, p := range got {
		if !p {
			missing++
		}
	}
	require.False(t, got[0], "the oldest key is evicted")
	for i := n - 500; i < n; i++ {
		require.True(t, got[i], "recent key %d stays", i)
	}
	// First in, first out: what stays is a suffix of the writes.
	first := n
	for i := n - 1; i >= 0 && got[i]; i-- {
		first = i
	}
	require.Equal(t, n-first, n-missing, "the keys kept are the newest ones")
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(missing), st.Evictions)
	require.Positive(t, st.SegmentsEvicted)
	require.Equal(t, int64(n-missing), st.Keys)
	require.NoError(t, db.Close())

	// A restart keeps what was evicted evicted, and keeps the limit.
	db, err = Open("/db", o)
	require.NoError(t, err)
	require.Equal(t, got, present(t, db, n))
	putRange(t, db, n, 2*n, nil)
	require.LessOrEqual(t, dirBytes(t, fs, "/db"), o.MaxDiskBytes)
	after := present(t, db, 2*n)
	for i := range n {
		require.False(t, after[i], "key %d of the first run is evicted by the second", i)
	}
	require.True(t, after[2*n-1])
	require.NoError(t, db.Close())
	requireVerifyOK(t, "/db", &Options{FS: fs})
}

func TestCacheModeSecondChance(t *testing.T) {
	fs := vfs.NewMem()
	o := cacheOpts(fs)
	o.EvictSecondChance = true
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n, hot = 12000, 50
	// Keys [0, hot) are read after every 500 writes; [hot, 2*hot) never.
	putRange(t, db, 0, n, func(i int) {
		for k := range min(hot, i) {
			_, err := db.Get(cacheKey(k))
			require.NoError(t, err, "hot key %d", k)
		}
	})
	got := present(t, db, n)
	for k := range hot {
		require.True(t, got[k], "hot key %d kept by its reads", k)
	}
	cold := 0
	for k := hot; k < 2*hot; k++ {
		if !got[k] {
			cold++
		}
	}
	// A cold key may share a hot key's bit; nearly all of them go.
	require.Greater(t, cold, 2*hot/3)
	require.LessOrEqual(t, dirBytes(t, fs, "/db"), o.MaxDiskBytes)
	st, err := db.Stats()
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.SecondChances, int64(hot))
	require.NoError(t, db.Close())
}

// TestCacheModeDeleteOfEvictedKeySurvivesCrash: an evicted segment's file
// stays until a snapshot lets it go, and a crash before then brings its
// keys back. A delete of such a key made meanwhile found nothing to
// delete, yet it must hold after the crash.
func TestCacheModeDeleteOfEvictedKeySurvivesCrash(t *testing.T) {
	mem := vfs.NewMem()
	var failSnap atomic.Bool
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if failSnap.Load() && op == vfs.OpCreate && strings.HasSuffix(name, snapTmpName) {
			return errors.New("injected: no snapshot")
		}
		return nil
	}))
	o := cacheOpts(fs)
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n = 6000
	for i := range n {
		require.NoError(t, db.Put(cacheKey(i), cacheValue(i)))
	}
	require.NoError(t, db.Sync())
	failSnap.Store(true)
	require.Error(t, db.evictPass(), "the snapshot that deletes the evicted files fails")
	for i := range 4 {
		_, err := db.Get(cacheKey(i))
		require.ErrorIs(t, err, ErrNotFound, "key %d evicted", i)
	}
	// Delete keys 0-2 three ways: Delete, a Batch, an Update.
	require.NoError(t, db.Delete(cacheKey(0)))
	var b Batch
	b.Delete(cacheKey(1))
	require.NoError(t, db.Write(&b))
	_, err = db.Update(cacheKey(2), func([]byte, Item, bool, uint64) (Change, error) {
		return Change{Op: Remove}, nil
	})
	require.NoError(t, err)
	require.NoError(t, db.Sync())

	crashed := mem.CrashClone(nil)
	failSnap.Store(false)
	require.NoError(t, db.Close())
	o2 := testOpts(crashed)
	db2, err := Open("/db", o2)
	require.NoError(t, err)
	defer db2.Close()
	for i := range 3 {
		_, err := db2.Get(cacheKey(i))
		require.ErrorIs(t, err, ErrNotFound, "deleted key %d stays deleted after the crash", i)
	}
	// The crash brought back key 3, evicted but never deleted: data the
	// cache may serve (evict.go); the newest keys are all there.
	v, err := db2.Get(cacheKey(3))
	require.NoError(t, err)
	require.Equal(t, cacheValue(3), v)
	for i := n - 100; i < n; i++ {
		v, err := db2.Get(cacheKey(i))
		require.NoError(t, err)
		require.Equal(t, cacheValue(i), v)
	}
}

// TestCacheModeBackground: with no explicit passes, the background worker
// keeps the database under the limit.
func TestCacheModeBackground(t *testing.T) {
	fs := vfs.NewMem()
	o := cacheOpts(fs)
	o.CompactionInterval = 20 * time.Millisecond
	o.manualEvict = false
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 12000 {
		require.NoError(t, db.Put(cacheKey(i), cacheValue(i)))
	}
	require.NoError(t, db.Sync())
	require.Eventually(t, func() bool { return dirBytes(t, fs, "/db") <= o.MaxDiskBytes }, 10*time.Second, 20*time.Millisecond)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Positive(t, st.Evictions)
}

func TestCacheModeOptions(t *testing.T) {
	for _, o := range []*Options{
		{MaxDiskBytes: -1},
		{MaxDiskBytes: 1 << 20, SegmentSize: 1 << 20},
		{EvictSecondChance: true},
	} {
		o.FS = vfs.NewMem()
		_, err := Open("/db", o)
		require.ErrorIs(t, err, ErrBadOptions, "%+v", o)
	}
}

// TestCacheModeWaitsForScans: a scan pins the segments it will read;
// eviction waits for it instead of evicting newer segments, which would
// cost a tombstone per evicted key.
func TestCacheModeWaitsForScans(t *testing.T) {
	fs := vfs.NewMem()
	o := cacheOpts(fs)
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 6000 {
		require.NoError(t, db.Put(cacheKey(i), cacheValue(i)))
	}
	it := db.NewIterator()
	require.True(t, it.Next())
	// Segments written after the scan started are not pinned.
	for i := 6000; i < 12000; i++ {
		require.NoError(t, db.Put(cacheKey(i), cacheValue(i)))
	}
	require.NoError(t, db.Sync())
	before, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.evictPass())
	during, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, during.Evictions, "nothing evicted under the scan")
	require.Equal(t, before.BytesWritten, during.BytesWritten, "no tombstones written")
	require.NoError(t, it.Close())
	require.NoError(t, db.evictPass())
	after, err := db.Stats()
	require.NoError(t, err)
	require.Positive(t, after.Evictions)
	require.LessOrEqual(t, dirBytes(t, fs, "/db"), o.MaxDiskBytes)
}
