package index

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/marlinkv/marlin/arena"
	"github.com/stretchr/testify/require"
)

// testReserve is address space only (MAP_NORESERVE); the slab allocator
// carves it a chunk at a time as blocks need it.
const testReserve = 1 << 36

func TestSplitSlot(t *testing.T) {
	h := mkHash(0xBEEF, 0x5BCDEF1, 1<<(64-ShardBits-FPBits)-1)
	sn, fp := Split(h)
	require.Equal(t, 0xBEEF, sn)
	require.Equal(t, uint64(0x5BCDEF1), fp)
	sn, fp = Split(^uint64(0))
	require.Equal(t, NumShards-1, sn)
	require.Equal(t, uint64(1<<FPBits-1), fp)
	sn, fp = Split(1<<(64-ShardBits-FPBits) - 1)
	require.Zero(t, sn)
	require.Zero(t, fp)

	s := Slot(fp, LocMask)
	require.Equal(t, uint64(LocMask), s&LocMask)
	s = Slot(0x5BCDEF1, 12345)
	require.Equal(t, uint64(0x5BCDEF1), s>>LocBits)
	require.Equal(t, uint64(12345), s&LocMask)
}

func TestEmpty(t *testing.T) {
	ix := newIndex(t, 1<<26)
	called := false
	require.False(t, ix.Lookup(12345, func(uint64) bool { called = true; return true }))
	require.False(t, called)
	_, ok := ix.Delete(12345, func(uint64) bool { return true })
	require.False(t, ok)
	require.False(t, ix.DeleteExact(12345, 1))
	require.False(t, ix.CompareAndSwap(12345, 1, 2))
	require.Empty(t, ix.ShardLocations(0, nil))
	st := ix.Stats()
	require.Zero(t, st.Entries)
	require.Zero(t, st.Capacity)
	require.Zero(t, st.LoadFactor)
	require.Equal(t, int64(NumShards*32), st.ShardBytes)
	require.NoError(t, ix.Check())
}

func TestPutLocationRange(t *testing.T) {
	ix := newIndex(t, 1<<26)
	always := func(uint64) (bool, bool) { return true, true }
	_, _, _, err := ix.Put(42, 0, always)
	require.Error(t, err)
	_, _, _, err = ix.Put(42, LocMask+1, always)
	require.Error(t, err)
	_, _, _, err = ix.Put(42, 1<<63, always)
	require.Error(t, err)
	require.Zero(t, ix.Len())

	// The extremes of the range are fine, also next to an all-ones fingerprint.
	h := ^uint64(0)
	_, found, _, err := ix.Put(h, LocMask, always)
	require.NoError(t, err)
	require.False(t, found)
	_, found, _, err = ix.Put(h-1<<(64-ShardBits-FPBits), 1, always) // fingerprint one less
	require.NoError(t, err)
	require.False(t, found)
	var got []uint64
	require.False(t, ix.Lookup(h, func(l uint64) bool { got = append(got, l); return false }))
	require.Equal(t, []uint64{LocMask}, got)
	require.NoError(t, ix.Check())

	// A rejected overwrite leaves the entry alone.
	_, _, _, err = ix.Put(h, 0, always)
	require.Error(t, err)
	require.True(t, ix.Lookup(h, func(l uint64) bool { return l == LocMask }))
	require.False(t, ix.CompareAndSwap(h, LocMask, 0))
	require.False(t, ix.CompareAndSwap(h, LocMask, LocMask+1))
	require.True(t, ix.Lookup(h, func(l uint64) bool { return l == LocMask }))
	require.Equal(t, int64(2), ix.Len())
}

func TestPutKeepAndReplace(t *testing.T) {
	ix := newIndex(t, 1<<26)
	h := mkHash(77, 12345, 0)
	isKey := func(want uint64, replace bool) PutFunc {
		return func(old uint64) (bool, bool) { return keyOf(old) == keyOf(want), replace }
	}
	l1, l2, l3 := locOf(5, 1), locOf(5, 2), locOf(5, 3)

	old, found, replaced, err := ix.Put(h, l1, isKey(l1, true))
	require.NoError(t, err)
	require.Equal(t, []any{uint64(0), false, false}, []any{old, found, replaced})

	// Claimed but not replaced: old entry stays, no new entry.
	old, found, replaced, err = ix.Put(h, l2, isKey(l2, false))
	require.NoError(t, err)
	require.Equal(t, []any{l1, true, false}, []any{old, found, replaced})
	require.Equal(t, int64(1), ix.Len())
	require.Equal(t, []uint64{l1}, ix.ShardLocations(77, nil))

	// Claimed and replaced.
	old, found, replaced, err = ix.Put(h, l3, isKey(l3, true))
	require.NoError(t, err)
	require.Equal(t, []any{l1, true, true}, []any{old, found, replaced})
	require.Equal(t, []uint64{l3}, ix.ShardLocations(77, nil))

	// Same hash, different key: match declines, a second entry is added.
	other := locOf(6, 1)
	old, found, replaced, err = ix.Put(h, other, isKey(other, true))
	require.NoError(t, err)
	require.Equal(t, []any{uint64(0), false, false}, []any{old, found, replaced})
	require.Equal(t, int64(2), ix.Len())
	require.ElementsMatch(t, []uint64{l3, other}, ix.ShardLocations(77, nil))
	require.NoError(t, ix.Check())
}

func TestCompareAndSwap(t *testing.T) {
	ix := newIndex(t, 1<<26)
	h := mkHash(9, 777, 1)
	// Three keys with the same full hash.
	a1, b1, c1 := locOf(1, 1), locOf(2, 1), locOf(3, 1)
	for _, l := range []uint64{a1, b1, c1} {
		_, _, _, err := ix.Put(h, l, func(o uint64) (bool, bool) { return keyOf(o) == keyOf(l), true })
		require.NoError(t, err)
	}
	cur := func(id int) uint64 {
		var got uint64
		ix.Lookup(h, func(l uint64) bool {
			if keyOf(l) == id {
				got = l
				return true
			}
			return false
		})
		return got
	}
	b2 := locOf(2, 2)
	require.True(t, ix.CompareAndSwap(h, b1, b2))
	require.Equal(t, b2, cur(2))
	require.Equal(t, a1, cur(1), "other keys untouched")
	require.Equal(t, c1, cur(3))
	require.False(t, ix.CompareAndSwap(h, b1, locOf(2, 3)), "old location is gone")
	require.Equal(t, b2, cur(2))
	require.False(t, ix.CompareAndSwap(h+1<<(64-ShardBits-FPBits), b2, locOf(2, 3)), "other fingerprint")
	require.False(t, ix.CompareAndSwap(h+1<<(64-ShardBits), b2, locOf(2, 3)), "other shard")

	// Overwrite by Put, then CAS from the pre-overwrite location fails.
	b4 := locOf(2, 4)
	_, found, _, err := ix.Put(h, b4, func(o uint64) (bool, bool) { return keyOf(o) == 2, true })
	require.NoError(t, err)
	require.True(t, found)
	require.False(t, ix.CompareAndSwap(h, b2, locOf(2, 5)))
	require.Equal(t, b4, cur(2))

	// Delete, then CAS fails and does not resurrect.
	require.True(t, ix.DeleteExact(h, b4))
	require.False(t, ix.CompareAndSwap(h, b4, locOf(2, 6)))
	require.Zero(t, cur(2))
	require.Equal(t, int64(2), ix.Len())
	require.NoError(t, ix.Check())
}

func TestDeleteExact(t *testing.T) {
	ix := newIndex(t, 1<<26)
	h := mkHash(3, 1<<(FPBits-1), 0)
	var locs []uint64
	for id := 0; id < 10; id++ {
		l := locOf(id, 1)
		locs = append(locs, l)
		_, _, _, err := ix.Put(h, l, func(uint64) (bool, bool) { return false, false })
		require.NoError(t, err)
	}
	require.False(t, ix.DeleteExact(h, locOf(99, 1)))
	require.False(t, ix.DeleteExact(h+1<<(64-ShardBits), locs[4]), "same fingerprint, other shard")
	require.True(t, ix.DeleteExact(h, locs[4]))
	require.False(t, ix.DeleteExact(h, locs[4]))
	got := ix.ShardLocations(3, nil)
	want := slices.Delete(slices.Clone(locs), 4, 5)
	slices.Sort(got)
	require.Equal(t, want, got)
	for _, l := range want {
		require.True(t, ix.DeleteExact(h, l))
	}
	require.Zero(t, ix.Len())
	require.Empty(t, ix.ShardLocations(3, nil))
	require.NoError(t, ix.Check())
}

// TestShiftLayout checks the exact slot layout after shifting inserts and
// backward-shift deletes in a minimal table.
func TestShiftLayout(t *testing.T) {
	ix := newIndex(t, 1<<26)
	const sn = 5
	c := minCap
	type ent struct {
		name string
		fp   uint64
	}
	mk := func(name string, home int, k uint64) ent { return ent{name, fpForHome(home, c, k)} }
	A, B, C := mk("A", 2, 1), mk("B", 2, 2), mk("C", 2, 4)
	D, E, F := mk("D", 4, 0), mk("E", 5, 0), mk("F", 7, 0)
	X := mk("X", 2, 3) // between B and C
	locs := map[string]uint64{}
	for i, e := range []ent{A, B, C, D, E, F, X} {
		locs[e.name] = uint64(100 + i)
	}
	put := func(e ent) {
		_, found, _, err := ix.Put(mkHash(sn, e.fp, 0), locs[e.name], func(uint64) (bool, bool) { return true, true })
		require.NoError(t, err)
		require.False(t, found)
	}
	layout := func(names ...string) []uint64 {
		out := make([]uint64, c+Overflow)
		for i, n := range names {
			if n != "" {
				for _, e := range []ent{A, B, C, D, E, F, X} {
					if e.name == n {
						out[i] = Slot(e.fp, locs[n])
					}
				}
			}
		}
		return out
	}
	// Insert out of order; the table keeps fingerprint order.
	for _, e := range []ent{F, C, A, E, B, D} {
		put(e)
	}
	require.Equal(t, c, shardCap(ix, sn))
	require.Equal(t, layout("", "", "A", "B", "C", "D", "E", "F"), ix.shardSlots(sn))

	// Insert in the middle of a cluster: C, D, E shift right (F at its home
	// 7 is pushed too, since the cluster is contiguous).
	put(X)
	require.Equal(t, layout("", "", "A", "B", "X", "C", "D", "E", "F"), ix.shardSlots(sn))
	require.NoError(t, ix.Check())

	del := func(e ent) {
		l, ok := ix.Delete(mkHash(sn, e.fp, 0), func(l uint64) bool { return l == locs[e.name] })
		require.True(t, ok)
		require.Equal(t, locs[e.name], l)
	}
	// Delete B: X, C, D, E, F shift back; F returns to its home 7.
	del(B)
	require.Equal(t, layout("", "", "A", "X", "C", "D", "E", "F"), ix.shardSlots(sn))
	// Delete X: C, D (home 4, at 5) and E (home 5, at 6) move back; F at
	// its home 7 stops the shift.
	del(X)
	require.Equal(t, layout("", "", "A", "C", "D", "E", "", "F"), ix.shardSlots(sn))
	// Delete A: C moves to its home 2; D at its home 4 stops the shift.
	del(A)
	require.Equal(t, layout("", "", "C", "", "D", "E", "", "F"), ix.shardSlots(sn))
	require.NoError(t, ix.Check())
	for _, e := range []ent{C, D, E, F} {
		require.True(t, ix.Lookup(mkHash(sn, e.fp, 0), func(l uint64) bool { return l == locs[e.name] }), e.name)
	}
	for _, e := range []ent{A, B, X} {
		require.False(t, ix.Lookup(mkHash(sn, e.fp, 0), func(uint64) bool { return true }), e.name)
	}
}

// TestOverflowArea fills the last home slot's cluster into the overflow area.
func TestOverflowArea(t *testing.T) {
	ix := newIndex(t, testReserve)
	const sn = 11
	top := uint64(1<<FPBits - 1)
	// Overflow+1 keys with the all-ones fingerprint: the most that can ever
	// share it (its home is always the last home slot).
	for id := 0; id <= Overflow; id++ {
		_, _, _, err := ix.Put(mkHash(sn, top, uint64(id)), locOf(id, 1), func(o uint64) (bool, bool) { return keyOf(o) == id, true })
		require.NoError(t, err, "id %d", id)
	}
	require.NoError(t, ix.Check())
	slots := ix.shardSlots(sn)
	require.NotZero(t, slots[len(slots)-1], "last overflow slot used")
	// Grow the shard a lot around them; all stay findable.
	m := newModel(t, ix, nil)
	for id := 0; id <= Overflow; id++ {
		m.hash = append(m.hash, mkHash(sn, top, uint64(id)))
		m.cur[id] = locOf(id, 1)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	for id := Overflow + 1; id < 5000; id++ {
		// Keep clear of the last eighth of the range: the overflow area is
		// all taken by the all-ones keys.
		fp := rng.Uint64N(1 << FPBits * 7 / 8)
		m.hash = append(m.hash, mkHash(sn, fp, 0))
		m.put(id)
	}
	m.verify()
	for id := 0; id < 5000; id += 2 {
		m.del(id)
	}
	m.verify()
}

// TestModel runs random operations against a Go map, with key hashes chosen
// to collide in every way the index must handle.
func TestModel(t *testing.T) {
	const nKeys = 60000
	ops := 400000
	if raceEnabled {
		ops = 150000
	}
	rng := rand.New(rand.NewPCG(1, 2))
	hash := make([]uint64, nKeys)
	hot := []int{0, 4242, NumShards - 1}
	// Same-full-hash groups, including the extreme fingerprints. The
	// all-ones fingerprint can hold at most Overflow+1 keys.
	groups := []uint64{
		mkHash(hot[0], 0, 5),
		mkHash(hot[1], 1<<(FPBits-1), 7),
		mkHash(hot[2], 1<<FPBits-1, 9),
		mkHash(1234, rng.Uint64N(1<<FPBits), 0),
	}
	groupSize := []int{40, 300, Overflow / 2, 100}
	id := 0
	for g, h := range groups {
		for i := 0; i < groupSize[g]; i++ {
			hash[id] = h
			id++
		}
	}
	// Same fingerprint as a group, other shards.
	for i := 0; i < 200; i++ {
		_, fp := Split(groups[i%len(groups)])
		hash[id] = mkHash(rng.IntN(NumShards), fp, uint64(i))
		id++
	}
	for ; id < nKeys; id++ {
		switch r := rng.IntN(10); {
		case r < 4:
			hash[id] = splitmix64(uint64(id))
		case r < 8: // hot shards, random fingerprints
			hash[id] = mkHash(hot[rng.IntN(len(hot))], rng.Uint64N(1<<FPBits), rng.Uint64())
		default: // hot shard, fingerprints crowded into a narrow range
			hash[id] = mkHash(hot[1], 1<<(FPBits-2)+rng.Uint64N(2000), rng.Uint64())
		}
	}
	m := newModel(t, newIndex(t, testReserve), hash)
	pick := func() int {
		if rng.IntN(4) == 0 {
			return rng.IntN(1000) // the collision groups, often
		}
		return rng.IntN(nKeys)
	}
	for i := 0; i < ops; i++ {
		switch r := rng.IntN(100); {
		case r < 45:
			m.put(pick())
		case r < 65:
			m.del(pick())
		default:
			m.lookup(pick())
		}
		if i%(ops/8) == 0 {
			require.NoError(t, m.ix.Check(), "op %d", i)
		}
	}
	m.verify()
	st := m.ix.Stats()
	require.Equal(t, int64(len(m.cur)), st.Entries)
	require.LessOrEqual(t, st.LoadFactor, MaxLoad)
	// Delete everything.
	for id := range hash {
		m.del(id)
	}
	m.verify()
	require.Zero(t, m.ix.Stats().Entries)
}

// TestGrowAllShards loads 2M keys spread over all shards, checking lookups
// and invariants along the way, then deletes half.
func TestGrowAllShards(t *testing.T) {
	n := 2_000_000
	if raceEnabled {
		n = 400_000
	}
	hash := make([]uint64, n)
	for i := range hash {
		hash[i] = splitmix64(uint64(i))
	}
	ix := newIndex(t, testReserve)
	m := newModel(t, ix, hash)
	next := 1000
	for id := 0; id < n; id++ {
		m.put(id)
		if id+1 == next || id+1 == n {
			require.NoError(t, ix.Check())
			st := ix.Stats()
			require.Equal(t, int64(id+1), st.Entries)
			require.LessOrEqual(t, st.LoadFactor, MaxLoad)
			next *= 4
		}
	}
	m.verify()
	st := ix.Stats()
	t.Logf("%d keys: %+v, %.1f bytes/key", n, st, float64(st.ResidentBytes)/float64(st.Entries))
	require.LessOrEqual(t, st.LoadFactor, MaxLoad)
	if n >= 1_000_000 { // ~30 keys a shard: loads are in the growth band
		require.Greater(t, st.LoadFactor, 0.6, "load factor far below the growth band")
	}
	require.GreaterOrEqual(t, st.LiveBytes, 8*st.Capacity)
	require.GreaterOrEqual(t, st.ResidentBytes, st.LiveBytes)
	require.LessOrEqual(t, st.ResidentBytes, st.LiveBytes+ix.slabs.usage().inUse*int64(arena.PageSize)+int64(st.Classes)*releaseSlack,
		"freed blocks should be given back")
	require.LessOrEqual(t, st.AddressBytes, st.LiveBytes+int64(st.Classes+1)*chunkBytes, "address space follows the live blocks")
	for id := 0; id < n; id += 2 {
		m.del(id)
	}
	m.verify()
	// Re-insert half of the deleted ones: shards do not need to grow.
	before := ix.Stats().Capacity
	for id := 0; id < n; id += 4 {
		m.put(id)
	}
	require.Equal(t, before, ix.Stats().Capacity)
	require.NoError(t, ix.Check())
}

// TestGrowOneShard forces 200k keys into one shard, through many growth
// steps, then deletes them all in random order.
func TestGrowOneShard(t *testing.T) {
	n := 200_000
	if raceEnabled {
		n = 100_000
	}
	const sn = 0xBEEF
	hash := make([]uint64, n)
	for i := range hash {
		r := splitmix64(uint64(i))
		hash[i] = mkHash(sn, r>>(64-FPBits), r)
	}
	ix := newIndex(t, testReserve)
	m := newModel(t, ix, hash)
	prevCap, grows := 0, 0
	for id := 0; id < n; id++ {
		m.put(id)
		if c := shardCap(ix, sn); c != prevCap {
			grows++
			require.Greater(t, c, prevCap)
			prevCap = c
		}
		if id&(id+1) == 0 { // at powers of two: everything so far is there
			require.NoError(t, ix.Check())
			for j := 0; j <= id; j++ {
				m.lookup(j)
			}
			m.lookup(id + 1) // not yet
		}
	}
	t.Logf("shard capacity %d after %d growth steps", prevCap, grows)
	require.Greater(t, grows, 20)
	st := ix.Stats()
	require.Equal(t, int64(n), st.Entries)
	require.Equal(t, int64(prevCap), st.Capacity, "only one shard holds keys")
	require.LessOrEqual(t, st.LoadFactor, MaxLoad)
	require.Greater(t, st.LoadFactor, MaxLoad*growDen/growNum*0.9)
	require.Len(t, ix.ShardLocations(sn, nil), n)
	require.Empty(t, ix.ShardLocations(sn+1, nil))
	m.verify()

	order := rand.New(rand.NewPCG(5, 5)).Perm(n)
	for i, id := range order {
		m.del(id)
		if i%(n/4) == 0 {
			require.NoError(t, ix.Check())
		}
	}
	m.verify()
	require.Zero(t, ix.Len())
	slots := ix.shardSlots(sn)
	for i, s := range slots {
		require.Zero(t, s, "slot %d left behind", i)
	}
}

// TestSameHashMany puts many distinct keys with the same full 64-bit hash
// into a shard that also holds and grows with other keys.
func TestSameHashMany(t *testing.T) {
	const sn = 321
	const same = 500
	n := 20000
	hash := make([]uint64, n)
	shared := mkHash(sn, 0x2345678, 0x1234)
	for i := range hash {
		if i < same {
			hash[i] = shared
		} else {
			r := splitmix64(uint64(i))
			hash[i] = mkHash(sn, r>>(64-FPBits), r)
		}
	}
	ix := newIndex(t, testReserve)
	m := newModel(t, ix, hash)
	for id := 0; id < n; id++ {
		m.put(id)
	}
	m.verify()
	// Every same-hash key is offered exactly the same-hash candidates.
	calls := 0
	require.False(t, ix.Lookup(shared, func(l uint64) bool {
		require.Less(t, keyOf(l), same)
		calls++
		return false
	}))
	require.Equal(t, same, calls)
	for id := 0; id < same; id += 3 {
		m.del(id)
	}
	for id := 1; id < same; id += 3 {
		m.put(id) // overwrite
	}
	m.verify()
}

// TestTooManySameTopFingerprint: more keys than fit can share the all-ones
// fingerprint of a shard. Put must fail for the excess key without eating
// the reservation, and the rest of the index must keep working.
func TestTooManySameTopFingerprint(t *testing.T) {
	ix := newIndex(t, 1<<36)
	const sn = 99
	h := mkHash(sn, 1<<FPBits-1, 0)
	put := func(hash uint64, loc uint64) error {
		_, _, _, err := ix.Put(hash, loc, func(uint64) (bool, bool) { return false, false })
		return err
	}
	for id := 0; id <= Overflow; id++ {
		require.NoError(t, put(h, locOf(id, 1)))
	}
	err := put(h, locOf(Overflow+1, 1))
	require.ErrorIs(t, err, ErrCollision)
	require.Equal(t, int64(Overflow+1), ix.Len())
	require.NoError(t, ix.Check())
	require.LessOrEqual(t, ix.slabs.carved, 1, "a failed Put must not consume the reservation")
	// Repeating the failing Put does not keep growing the shard.
	c := shardCap(ix, sn)
	for i := 0; i < 10; i++ {
		require.ErrorIs(t, put(h, locOf(Overflow+2+i, 1)), ErrCollision)
	}
	require.Equal(t, c, shardCap(ix, sn))
	// Other shards (and other fingerprints in this shard) still grow.
	for id := 0; id < 200000; id++ {
		require.NoError(t, put(splitmix64(uint64(id)), locOf(id, 2)))
	}
	for id := 0; id < 100; id++ {
		require.NoError(t, put(mkHash(sn, uint64(id)<<(FPBits-10), 0), locOf(id, 3)))
	}
	require.NoError(t, ix.Check())
}

func TestStats(t *testing.T) {
	ix := newIndex(t, testReserve)
	var prev Stats
	for i := 0; i < 300000; i++ {
		_, _, _, err := ix.Put(splitmix64(uint64(i)), uint64(i+1), func(uint64) (bool, bool) { return false, false })
		require.NoError(t, err)
		if (i+1)%50000 == 0 {
			st := ix.Stats()
			require.Equal(t, int64(i+1), st.Entries)
			require.InDelta(t, float64(st.Entries)/float64(st.Capacity), st.LoadFactor, 1e-12)
			require.LessOrEqual(t, st.LoadFactor, MaxLoad)
			require.GreaterOrEqual(t, st.Capacity, prev.Capacity)
			shards := map[int]bool{}
			for j := 0; j <= i; j++ {
				sn, _ := Split(splitmix64(uint64(j)))
				shards[sn] = true
			}
			require.Equal(t, 8*(st.Capacity+int64(Overflow*len(shards))), st.LiveBytes)
			require.GreaterOrEqual(t, st.ResidentBytes, st.LiveBytes)
			require.Equal(t, int64(NumShards*32), st.ShardBytes)
			prev = st
		}
	}
}
