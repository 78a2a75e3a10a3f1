package index

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/arena"
)

// TestFindOrInsert: a new key is inserted at the walk's stopping point; a
// key match claims is returned unchanged; a fingerprint twin match
// rejects gets its own entry next to it; errors change nothing.
func TestFindOrInsert(t *testing.T) {
	ix := newIndex(t, 1<<30)
	byKey := func(id int) func(uint64) bool { return func(l uint64) bool { return keyOf(l) == id } }

	h := splitmix64(1)
	old, found, err := ix.FindOrInsert(h, locOf(1, 1), byKey(1))
	require.NoError(t, err)
	require.False(t, found)
	require.Zero(t, old)
	require.Equal(t, int64(1), ix.Len())

	// Present: returned, not replaced, nothing inserted.
	calls := 0
	old, found, err = ix.FindOrInsert(h, locOf(1, 2), func(l uint64) bool { calls++; return keyOf(l) == 1 })
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, locOf(1, 1), old)
	require.Equal(t, 1, calls)
	require.Equal(t, int64(1), ix.Len())
	var seen []uint64
	ix.Lookup(h, func(l uint64) bool { seen = append(seen, l); return false })
	require.Equal(t, []uint64{locOf(1, 1)}, seen, "the entry is left unchanged")

	// A twin: same shard and fingerprint, another key.
	old, found, err = ix.FindOrInsert(h, locOf(2, 1), byKey(2))
	require.NoError(t, err)
	require.False(t, found)
	require.Zero(t, old)
	seen = seen[:0]
	ix.Lookup(h, func(l uint64) bool { seen = append(seen, l); return false })
	require.Equal(t, []uint64{locOf(1, 1), locOf(2, 1)}, seen, "twins in insertion order")

	// Out-of-range locations change nothing.
	for _, bad := range []uint64{0, LocMask + 1} {
		_, _, err = ix.FindOrInsert(splitmix64(9), bad, byKey(9))
		require.Error(t, err)
	}
	require.Equal(t, int64(2), ix.Len())
	require.NoError(t, ix.Check())
}

// TestFindOrInsertGrowth inserts enough keys into one shard through
// FindOrInsert to grow it many times, then finds every key again without
// inserting, and checks the layout after each phase.
func TestFindOrInsertGrowth(t *testing.T) {
	ix := newIndex(t, 1<<30)
	const n = 3000
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = mkHash(7, splitmix64(uint64(i))>>(64-FPBits), 0)
	}
	byKey := func(id int) func(uint64) bool { return func(l uint64) bool { return keyOf(l) == id } }
	for i, h := range hs {
		_, found, err := ix.FindOrInsert(h, locOf(i, 1), byKey(i))
		require.NoError(t, err)
		require.False(t, found, "key %d", i)
	}
	require.NoError(t, ix.Check())
	require.Equal(t, int64(n), ix.Len())
	require.GreaterOrEqual(t, shardCap(ix, 7), n)
	for i, h := range hs {
		old, found, err := ix.FindOrInsert(h, locOf(i, 2), byKey(i))
		require.NoError(t, err)
		require.True(t, found, "key %d", i)
		require.Equal(t, locOf(i, 1), old)
	}
	require.Equal(t, int64(n), ix.Len())
	require.NoError(t, ix.Check())
}

// TestFindOrInsertCollision: keys crafted to share the top fingerprint
// cannot be spread apart by growth; the insert that fails leaves nothing.
func TestFindOrInsertCollision(t *testing.T) {
	ix := newIndex(t, 1<<30)
	// Keys sharing the top fingerprint cannot be spread apart by growth.
	top := uint64(1<<FPBits - 1)
	var err error
	i := 0
	for ; i < 100 && err == nil; i++ {
		_, _, err = ix.FindOrInsert(mkHash(3, top, 0), locOf(i, 1), func(uint64) bool { return false })
	}
	require.ErrorIs(t, err, ErrCollision)
	require.Equal(t, int64(i-1), ix.Len(), "the failed insert left nothing")
	require.NoError(t, ix.Check())
}

// TestRehashOverwritesGarbage: growth and LoadShard no longer zero a new
// block; rehash must write every slot. A block full of old bytes (a reused
// hole) must come out with zeros between and after the entries.
func TestRehashOverwritesGarbage(t *testing.T) {
	src := []uint64{Slot(5, 1), Slot(5, 2), 0, Slot(1<<26, 3), Slot(1<<FPBits-1, 4)}
	dst := make([]uint64, 64+Overflow)
	for i := range dst {
		dst[i] = ^uint64(0)
	}
	require.True(t, rehash(src, dst))
	var got []uint64
	for i, s := range dst {
		if s != 0 {
			got = append(got, s)
			require.GreaterOrEqual(t, i, home(s>>LocBits, len(dst)))
		}
	}
	require.Equal(t, []uint64{Slot(5, 1), Slot(5, 2), Slot(1<<26, 3), Slot(1<<FPBits-1, 4)}, got)
}

// TestFindOrInsertConcurrentReaders: readers looking up present keys never
// miss them while FindOrInsert inserts (shifting entries) and grows the
// same shards.
func TestFindOrInsertConcurrentReaders(t *testing.T) {
	ix := newIndex(t, 1<<30)
	const shards, pre, more = 4, 200, 3000
	hash := func(id int) uint64 { return mkHash(id%shards, splitmix64(uint64(id))>>(64-FPBits), 0) }
	byKey := func(id int) func(uint64) bool { return func(l uint64) bool { return keyOf(l) == id } }
	for id := range pre {
		_, _, err := ix.FindOrInsert(hash(id), locOf(id, 1), byKey(id))
		require.NoError(t, err)
	}
	var stop atomic.Bool
	var misses atomic.Int64
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := r; !stop.Load(); i++ {
				id := i % pre
				if !ix.Lookup(hash(id), byKey(id)) {
					misses.Add(1)
				}
			}
		}()
	}
	for id := pre; id < pre+more; id++ {
		_, found, err := ix.FindOrInsert(hash(id), locOf(id, 1), byKey(id))
		require.NoError(t, err)
		require.False(t, found)
	}
	stop.Store(true)
	wg.Wait()
	require.Zero(t, misses.Load())
	require.NoError(t, ix.Check())
}

// TestPrefetch only reads: it changes nothing, with empty and populated
// shards.
func TestPrefetch(t *testing.T) {
	ix := newIndex(t, 1<<30)
	hs := []uint64{splitmix64(1), splitmix64(2)}
	ix.Prefetch(hs)
	_, _, err := ix.FindOrInsert(hs[0], 5, func(uint64) bool { return false })
	require.NoError(t, err)
	ix.Prefetch(hs)
	require.Equal(t, int64(1), ix.Len())
	require.NoError(t, ix.Check())
}

// BenchmarkBatchInsert inserts b.N new keys in batches of 1000 the way the
// engine's Write did before issue 10 (Lookup, then Put walking again) and
// as it does now (Prefetch the batch, then one FindOrInsert per key). Run
// with -benchtime 10000000x for an index of 10^7 keys (about 100 MB, past
// the caches).
func BenchmarkBatchInsert(b *testing.B) {
	for _, mode := range []string{"LookupPut", "PrefetchFindOrInsert"} {
		b.Run(mode, func(b *testing.B) {
			ix, err := New(benchReserve)
			if err != nil {
				b.Fatal(err)
			}
			defer ix.Close()
			hs := make([]uint64, 1000)
			b.ResetTimer()
			for i := 0; i < b.N; i += len(hs) {
				n := min(len(hs), b.N-i)
				for j := range n {
					hs[j] = splitmix64(uint64(i + j))
				}
				if mode == "PrefetchFindOrInsert" {
					ix.Prefetch(hs[:n])
				}
				for j, h := range hs[:n] {
					loc := uint64(i+j) + 1
					match := func(old uint64) bool { return old == loc }
					if mode == "LookupPut" {
						if ix.Lookup(h, match) {
							b.Fatal("present")
						}
						if _, _, _, err := ix.Put(h, loc, noMatchPut); err != nil {
							b.Fatal(err)
						}
					} else if _, found, err := ix.FindOrInsert(h, loc, match); err != nil || found {
						b.Fatal(err, found)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
		})
	}
}

func noMatchPut(uint64) (bool, bool) { return false, false }

// TestLoadShardPopulatesThenTrims: a bulk load makes each class's pages
// resident ahead of its blocks (one madvise instead of a fault per page),
// and FinishLoad gives back those past the class's last block, so that
// the resident size is again what usage computes from the blocks.
func TestLoadShardPopulatesThenTrims(t *testing.T) {
	ix := newIndex(t, 1<<30)
	const shards, per = 300, 100 // one class, 300 blocks of 1.1 KiB: 84 pages
	for sn := range shards {
		slots := make([]uint64, per)
		for i := range slots {
			slots[i] = Slot(uint64(i)*(1<<FPBits/per), uint64(sn*per+i+1))
		}
		require.NoError(t, ix.LoadShard(sn, slots))
	}
	require.Len(t, ix.slabs.classes, 1)
	var c *class
	for _, c = range ix.slabs.classes {
	}
	start := int(c.chunks[0]) * chunkBytes
	end := c.used(0, len(c.owners))
	region := ix.slabs.mem[start : start+populateAhead]
	res := pagesResident(t, region)
	if !res[pageUp(end)/arena.PageSize] {
		t.Skip("MADV_POPULATE_WRITE not supported by this kernel")
	}
	ix.FinishLoad()
	for p, r := range pagesResident(t, region) {
		require.Equal(t, p < pageUp(end)/arena.PageSize, r, "page %d (the blocks end at byte %d)", p, end)
	}
	require.Equal(t, int64(pageUp(end)), ix.slabs.usage().resident)
	require.NoError(t, ix.Check())
	for sn := range shards {
		require.True(t, ix.Lookup(mkHash(sn, 0, 0), func(l uint64) bool { return l == uint64(sn*per+1) }))
	}
}
