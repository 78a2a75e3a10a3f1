package index

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentReaders runs writers (each owning a disjoint set of keys)
// doing put/overwrite/delete/compare-and-swap against lock-free readers.
//
// Stable keys are inserted before the readers start and never deleted; they
// share shards (and some share full hashes) with the churning keys, so every
// shift, backward shift and growth of those shards happens under the
// readers. A reader must find every stable key every time, with a location
// no older than the last update completed before its lookup began and no
// newer than the last one begun before it ended.
func TestConcurrentReaders(t *testing.T) {
	const (
		nWriters = 3
		nReaders = 3
		stableN  = 6000
	)
	churnPer, opsPer := 30000, 600000
	if raceEnabled {
		churnPer, opsPer = 10000, 150000
	}
	n := stableN + nWriters*churnPer
	// Hot shards grow through the same block classes at about the same
	// time, so a hot shard leaving a class often moves another hot shard's
	// block (with its stable keys) under the readers.
	hot := []int{17, 4000, 4001, 9999, 20000, 33333, 50000, NumShards - 2}
	rng := rand.New(rand.NewPCG(11, 12))
	hash := make([]uint64, n)
	shared := mkHash(hot[0], 1<<(FPBits-1)+12345, 0) // a full hash shared by stable and churning keys
	for id := 0; id < n; id++ {
		switch r := rng.IntN(10); {
		case id < stableN && id%500 == 0, id >= stableN && (id-stableN)%churnPer < 8:
			hash[id] = shared
		case id >= stableN && r == 0: // same full hash as some stable key
			hash[id] = hash[rng.IntN(stableN)]
		case r < 7:
			hash[id] = mkHash(hot[rng.IntN(len(hot))], rng.Uint64N(1<<FPBits*15/16), rng.Uint64())
		default:
			hash[id] = splitmix64(uint64(id))
		}
	}
	ix := newIndex(t, testReserve)

	// Per-key version bounds: hi is raised before a write starts, lo after
	// it completed.
	lo := make([]atomic.Uint64, n)
	hi := make([]atomic.Uint64, n)
	isKey := func(id int) func(uint64) bool {
		return func(l uint64) bool { return keyOf(l) == id }
	}
	for id := 0; id < stableN; id++ {
		lo[id].Store(1)
		hi[id].Store(1)
		_, found, _, err := ix.Put(hash[id], locOf(id, 1), func(o uint64) (bool, bool) { return keyOf(o) == id, true })
		require.NoError(t, err)
		require.False(t, found)
	}
	capsBefore := make([]int, len(hot))
	for i, sn := range hot {
		capsBefore[i] = shardCap(ix, sn)
	}

	var stop atomic.Bool
	var readersWG, writersWG sync.WaitGroup
	var lookups atomic.Int64

	for r := 0; r < nReaders; r++ {
		readersWG.Add(1)
		go func(r int) {
			defer readersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 77))
			var got uint64
			slow := false
			fn := func(id int) func(uint64) bool {
				return func(l uint64) bool {
					if keyOf(l) == id {
						got = l
						return true
					}
					if slow {
						// Reading a record takes time: let writers move
						// entries and blocks between our slot loads.
						runtime.Gosched()
					}
					return false
				}
			}
			var done int64
			for !stop.Load() {
				done++
				slow = done%4 == 0
				if rng.IntN(2) == 0 {
					id := rng.IntN(stableN)
					if rng.IntN(3) == 0 {
						id = rng.IntN(stableN/500) * 500 // the shared-hash ones
					}
					l := lo[id].Load()
					got = 0
					ok := ix.Lookup(hash[id], fn(id))
					h := hi[id].Load()
					if !ok {
						t.Errorf("reader %d: stable key %d (hash %#x) not found", r, id, hash[id])
						return
					}
					if v := verOf(got); v < l || v > h {
						t.Errorf("reader %d: stable key %d: version %d outside [%d,%d]", r, id, v, l, h)
						return
					}
					continue
				}
				id := stableN + rng.IntN(n-stableN)
				got = 0
				if ix.Lookup(hash[id], fn(id)) {
					if v, h := verOf(got), hi[id].Load(); v == 0 || v > h {
						t.Errorf("reader %d: key %d: version %d never written (max %d)", r, id, v, h)
						return
					}
				}
			}
			lookups.Add(done)
		}(r)
	}

	// A scanner takes shard snapshots: each must hold every stable key of
	// the shard exactly once and no key twice.
	stableIn := map[int][]int{}
	for id := 0; id < stableN; id++ {
		sn, _ := Split(hash[id])
		stableIn[sn] = append(stableIn[sn], id)
	}
	var scans, moves atomic.Int64
	readersWG.Add(1)
	go func() {
		defer readersWG.Done()
		var buf []uint64
		seen := map[int]bool{}
		lastD := make([]uint64, len(hot))
		for i := 0; !stop.Load(); i++ {
			sn := hot[i%len(hot)]
			// A block that changed place but not size was moved by the slab
			// allocator.
			d := ix.shards[sn].table.Load()
			if o := lastD[i%len(hot)]; o != 0 && o != d && o&(1<<unitsBits-1) == d&(1<<unitsBits-1) {
				moves.Add(1)
			}
			lastD[i%len(hot)] = d
			buf = ix.ShardLocations(sn, buf[:0])
			clear(seen)
			for _, l := range buf {
				k := keyOf(l)
				if seen[k] {
					t.Errorf("shard %d snapshot: key %d twice", sn, k)
					return
				}
				seen[k] = true
			}
			for _, id := range stableIn[sn] {
				if !seen[id] {
					t.Errorf("shard %d snapshot: stable key %d missing", sn, id)
					return
				}
			}
			scans.Add(1)
		}
	}()

	// Writers. Each owns churn keys [base, base+churnPer) and the stable keys
	// id%nWriters == w, and keeps the exact state of its keys.
	finalLoc := make([]uint64, n) // written by the owner only; read after Wait
	for w := 0; w < nWriters; w++ {
		writersWG.Add(1)
		go func(w int) {
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1234))
			base := stableN + w*churnPer
			cur := make(map[int]uint64)
			ver := make(map[int]uint64)
			for id := w; id < stableN; id += nWriters {
				cur[id] = locOf(id, 1)
				ver[id] = 1
			}
			bump := func(id int) (uint64, bool) {
				if ver[id] >= 1<<(LocBits-idBits)-1 {
					return 0, false
				}
				ver[id]++
				hi[id].Store(ver[id])
				return locOf(id, ver[id]), true
			}
			fail := func(format string, args ...any) {
				t.Errorf("writer %d: "+format, append([]any{w}, args...)...)
			}
			for op := 0; op < opsPer; op++ {
				// Grow the live set over time so hot shards keep growing.
				id := base + rng.IntN(1+churnPer*(op+1)/opsPer)
				if id >= base+churnPer {
					id = base + churnPer - 1
				}
				switch r := rng.IntN(100); {
				case r < 50: // put or overwrite
					loc, ok := bump(id)
					if !ok {
						continue
					}
					old, found, replaced, err := ix.Put(hash[id], loc, func(o uint64) (bool, bool) { return keyOf(o) == id, true })
					prev, had := cur[id]
					if err != nil || found != had || replaced != had || old != prev {
						fail("put %d: %#x %v %v %v, want %#x %v", id, old, found, replaced, err, prev, had)
						return
					}
					cur[id] = loc
				case r < 75: // delete
					loc, ok := ix.Delete(hash[id], isKey(id))
					prev, had := cur[id]
					if ok != had || loc != prev {
						fail("delete %d: %#x %v, want %#x %v", id, loc, ok, prev, had)
						return
					}
					delete(cur, id)
				case r < 85: // move a stable key
					sid := w + nWriters*rng.IntN((stableN-w+nWriters-1)/nWriters)
					old := cur[sid]
					loc, ok := bump(sid)
					if !ok {
						continue
					}
					if !ix.CompareAndSwap(hash[sid], old, loc) {
						fail("CAS of stable key %d failed", sid)
						return
					}
					cur[sid] = loc
					lo[sid].Store(ver[sid])
				case r < 88: // claim a stable key without replacing it
					sid := w + nWriters*rng.IntN((stableN-w+nWriters-1)/nWriters)
					old, found, replaced, err := ix.Put(hash[sid], locOf(sid, 1023), func(o uint64) (bool, bool) { return keyOf(o) == sid, false })
					if err != nil || !found || replaced || old != cur[sid] {
						fail("keep-put of %d: %#x %v %v %v, want %#x", sid, old, found, replaced, err, cur[sid])
						return
					}
				default: // the owner's reads are exact
					var got uint64
					ok := ix.Lookup(hash[id], func(l uint64) bool {
						if keyOf(l) == id {
							got = l
							return true
						}
						return false
					})
					if want, had := cur[id]; ok != had || got != want {
						fail("lookup of own key %d: %#x %v, want %#x %v", id, got, ok, want, had)
						return
					}
				}
			}
			for id, l := range cur {
				finalLoc[id] = l
			}
		}(w)
	}
	writersWG.Wait()
	stop.Store(true)
	readersWG.Wait()
	if t.Failed() {
		return
	}
	require.Positive(t, lookups.Load())
	require.Positive(t, scans.Load())
	for i, sn := range hot {
		t.Logf("hot shard %d: capacity %d -> %d", sn, capsBefore[i], shardCap(ix, sn))
		require.Greater(t, shardCap(ix, sn), 2*capsBefore[i], "hot shards should grow under the readers")
	}
	t.Logf("%d lookups, %d shard scans, %d block moves seen", lookups.Load(), scans.Load(), moves.Load())

	// Final state matches the writers' views exactly.
	m := newModel(t, ix, hash)
	for id, l := range finalLoc {
		if l != 0 {
			m.cur[id] = l
		}
	}
	m.verify()
}

// TestConcurrentMoves aims readers at shards whose slot blocks are being
// moved by the slab allocator or outgrown while the memory they leave is
// reused (cleared, refilled or overwritten by a moved block). Cycle i:
//
//  1. shard c gets a key: a block at the end of the smallest class, which
//     is cleared (the previous victim was there a moment ago);
//  2. victim shard v gets a group of keys sharing one full hash, in a block
//     after c's, and readers start looking them up;
//  3. c grows out of the class: v's block is moved into c's old place;
//  4. ("grow" only) the previous victim grows out of the class: v's block
//     is moved again, into the previous victim's old block.
//
// Readers look up the last key of a recent victim's group with a match
// callback that yields on every rejected candidate, so blocks change under
// them mid-scan. They must always find it.
func TestConcurrentMoves(t *testing.T) {
	cycles := 12000
	if raceEnabled {
		cycles = 4000
	}
	t.Run("move", func(t *testing.T) { testMoves(t, cycles, false) })
	t.Run("grow", func(t *testing.T) { testMoves(t, cycles, true) })
}

func testMoves(t *testing.T, cycles int, growVictims bool) {
	const group = 6
	ix := newIndex(t, testReserve)
	var latest atomic.Int64
	latest.Store(-1)
	victim := func(i int) int { return 2*i + 2 }
	churner := func(i int) int { return 2*i + 1 }
	// Victim i's group is keys [i*group, (i+1)*group).
	groupHash := func(i int) uint64 { return mkHash(victim(i), 1<<(FPBits-1)+uint64(i), 0) }
	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups, slowLookups atomic.Int64
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 5))
			for !stop.Load() {
				cur := int(latest.Load())
				if cur < 0 {
					runtime.Gosched()
					continue
				}
				i := max(0, cur-rng.IntN(3))
				want := (i+1)*group - 1 // last of the group: all others are rejected first
				rejected := 0
				var got uint64
				ok := ix.Lookup(groupHash(i), func(l uint64) bool {
					if keyOf(l) == want {
						got = l
						return true
					}
					rejected++
					runtime.Gosched()
					return false
				})
				if !ok || got != locOf(want, 1) {
					t.Errorf("reader %d: cycle %d: key %d: found=%v loc=%#x", r, i, want, ok, got)
					return
				}
				lookups.Add(1)
				if rejected > 0 {
					slowLookups.Add(1)
				}
				if rng.IntN(8) == 0 {
					n := 0
					for _, l := range ix.ShardLocations(victim(i), nil) {
						if k := keyOf(l); k >= i*group && k < (i+1)*group {
							n++
						}
					}
					if n != group {
						t.Errorf("reader %d: cycle %d: snapshot holds %d of the group's %d keys", r, i, n, group)
						return
					}
				}
			}
		}(r)
	}
	extra := 1 << 20 // ids of keys readers do not look for
	put := func(sn int) {
		h := mkHash(sn, splitmix64(uint64(extra))>>(64-FPBits), 0)
		if _, _, _, err := ix.Put(h, locOf(extra, 1), func(uint64) (bool, bool) { return false, false }); err != nil {
			t.Errorf("put: %v", err)
		}
		extra++
	}
	units := uint64((minCap + Overflow) / slotsPerUnit)
	moved := 0
	for i := 0; i < cycles && !t.Failed(); i++ {
		c, v := churner(i), victim(i)
		put(c)
		for k := 0; k < group; k++ {
			_, _, _, err := ix.Put(groupHash(i), locOf(i*group+k, 1), func(uint64) (bool, bool) { return false, false })
			require.NoError(t, err)
		}
		latest.Store(int64(i))
		d0 := ix.shards[v].table.Load()
		for shardCap(ix, c) == minCap {
			put(c)
		}
		d1 := ix.shards[v].table.Load()
		if d0 != d1 && d1&(1<<unitsBits-1) == units {
			moved++
		}
		if growVictims && i > 0 {
			for shardCap(ix, victim(i-1)) == minCap {
				put(victim(i - 1))
			}
		}
		if i%64 == 0 {
			runtime.Gosched() // let readers catch up with latest
		}
	}
	stop.Store(true)
	wg.Wait()
	require.False(t, t.Failed())
	t.Logf("%d cycles, %d victim blocks moved, %d lookups (%d yielding mid-scan)", cycles, moved, lookups.Load(), slowLookups.Load())
	require.Greater(t, moved, cycles*9/10, "the victim's block should move in (almost) every cycle")
	require.Positive(t, slowLookups.Load())
	require.NoError(t, ix.Check())
}

// TestMoveVsWriter moves blocks of shards whose writer is busy: the slab
// allocator must not move a block under a writer (it would write into the
// old copy and the update would be lost). A writer goroutine keeps
// compare-and-swapping the keys of the newest victim shard while the main
// goroutine makes the allocator move that shard's block.
func TestMoveVsWriter(t *testing.T) {
	cycles := 8000
	if raceEnabled {
		cycles = 2000
	}
	const keys = 4
	ix := newIndex(t, testReserve)
	victim := func(i int) int { return 2*i + 2 }
	churner := func(i int) int { return 2*i + 1 }
	hashOf := func(i, k int) uint64 { return mkHash(victim(i), uint64(k+1)<<(FPBits-4), 0) }
	var target atomic.Int64
	target.Store(-1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var cas atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		cur, i := [keys]uint64{}, -1
		for !stop.Load() {
			if n := int(target.Load()); n != i {
				i = n
				for k := range cur {
					cur[k] = locOf(i*keys+k, 1)
				}
			}
			if i < 0 {
				runtime.Gosched()
				continue
			}
			for k := range cur {
				next := cur[k] + 1<<idBits
				if verOf(next) >= 1<<(LocBits-idBits) {
					next = locOf(i*keys+k, 1)
				}
				if !ix.CompareAndSwap(hashOf(i, k), cur[k], next) {
					t.Errorf("cycle %d key %d: CAS from %#x failed: an update was lost", i, k, cur[k])
					return
				}
				cur[k] = next
				cas.Add(1)
			}
		}
	}()
	extra := 1 << 20
	put := func(h uint64, loc uint64) {
		if _, _, _, err := ix.Put(h, loc, func(uint64) (bool, bool) { return false, false }); err != nil {
			t.Errorf("put: %v", err)
		}
	}
	moved := 0
	for i := 0; i < cycles && !t.Failed(); i++ {
		c, v := churner(i), victim(i)
		put(mkHash(c, splitmix64(uint64(extra))>>(64-FPBits), 0), locOf(extra, 1))
		extra++
		for k := 0; k < keys; k++ {
			put(hashOf(i, k), locOf(i*keys+k, 1))
		}
		target.Store(int64(i))
		for spin := 0; cas.Load() == 0 && spin < 1000; spin++ {
			runtime.Gosched()
		}
		d0 := ix.shards[v].table.Load()
		for shardCap(ix, c) == minCap {
			put(mkHash(c, splitmix64(uint64(extra))>>(64-FPBits), 0), locOf(extra, 1))
			extra++
		}
		if ix.shards[v].table.Load() != d0 {
			moved++
		}
	}
	stop.Store(true)
	wg.Wait()
	require.False(t, t.Failed())
	t.Logf("%d cycles, %d moves made under a busy writer, %d CAS", cycles, moved, cas.Load())
	require.Positive(t, moved)
	require.NoError(t, ix.Check())
}
