package index

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// defaultReserve is the engine's default Options.IndexReserve.
const defaultReserve = 256 << 30

// shardCounts draws the number of keys of every shard for n random keys:
// Binomial(n, 2^-16) per shard, by its normal approximation (the mean is
// at least 150 for the sizes simulated here).
func shardCounts(rng *rand.Rand, n int64) []int {
	mu := float64(n) / NumShards
	sigma := math.Sqrt(mu * (1 - 1.0/NumShards))
	counts := make([]int, NumShards)
	for i := range counts {
		counts[i] = max(0, int(math.Round(mu+sigma*rng.NormFloat64())))
	}
	return counts
}

// growByCount runs the growth policy on a count alone: a shard starts at
// rung 0 with its first key and moves one rung up whenever an insert would
// pass MaxLoad. It is what Put does when no final cluster overflows.
func growByCount(count int) int {
	r := 0
	for c := 1; c <= count; {
		if overLoad(c, ladder[r]) {
			r++
			continue
		}
		// Jump to the next count at which this rung overflows.
		c = ladder[r]*maxLoadNum/maxLoadDen + 1
	}
	return r
}

// addressBound is the bound slab.go states for the address space the slab
// allocator carves over a load that ends with shards in the given rungs
// (-1: no block), with at most writers shards growing at once: chunks in
// use at any moment are at most Σ_k ⌈n_k / perChunk_k⌉ ≤ (bytes of blocks
// held) / (chunkBytes − largest block) + classes in use. A shard's block
// only grows during a load, so the bytes held at any moment are at most
// the final blocks plus one old block per shard in the middle of growing.
// Holes (moves refused because another writer held the shard) are not
// counted: the engine's writers hold its write lock, so its moves are
// never refused.
func addressBound(rungs []int, writers int) (bound, live int64) {
	top := 0
	for _, r := range rungs {
		if r >= 0 {
			live += int64(ladder[r]+Overflow) * 8
			top = max(top, r)
		}
	}
	maxBlock := int64(ladder[top]+Overflow) * 8
	held := live + int64(writers)*maxBlock
	chunks := (held+chunkBytes-maxBlock-1)/(chunkBytes-maxBlock) + int64(top+1)
	return chunks * chunkBytes, live
}

// TestAddressSpaceSimulated simulates every shard's growth for loads of
// 10^7 to 10^10 random keys and checks that the address space the index
// needs stays below the default reservation with room to spare; the 10^9
// figures are the ones in docs/design.md (The slab allocator). Each
// shard's key count is drawn from its binomial distribution and the growth
// policy is run on it. Put also grows when the final cluster overflows
// (a rung early) and retries a rung higher when the entries do not fit, so
// the bound is also computed with every shard two rungs above its count's
// rung (about 32% more bytes); TestRungsAtBillionPerShard checks that
// envelope against the real index at the per-shard count of 10^9 keys,
// where about 92% of the shards sit at their count's rung and the real
// blocks hold about 2% more bytes than the count model's.
func TestAddressSpaceSimulated(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 9))
	t.Logf("%-8s %-8s %-10s %-8s %-7s %-14s %-14s %-10s", "keys", "keys/sh", "index GiB", "B/key", "rungs", "bound GiB", "bound+2 GiB", "top block")
	for _, n := range []int64{1e7, 1e8, 1e9, 4e9, 1e10} {
		counts := shardCounts(rng, n)
		rungs := make([]int, len(counts))
		high := make([]int, len(counts)) // two rungs higher
		used := map[int]bool{}
		var keys int64
		for s, c := range counts {
			keys += int64(c)
			rungs[s], high[s] = -1, -1
			if c > 0 {
				rungs[s] = growByCount(c)
				require.Equal(t, loadRung(c), rungs[s], "count %d", c)
				high[s] = min(rungs[s]+2, len(ladder)-1)
				used[rungs[s]] = true
			}
		}
		bound, live := addressBound(rungs, 1)
		boundHigh, _ := addressBound(high, 1)
		top := 0
		for r := range used {
			top = max(top, r)
		}
		t.Logf("%-8.0e %-8d %-10.2f %-8.2f %-7d %-14.2f %-14.2f %-10d", float64(n), n/NumShards,
			float64(live)/(1<<30), float64(live)/float64(keys), len(used),
			float64(bound)/(1<<30), float64(boundHigh)/(1<<30), (ladder[top]+Overflow)*8)
		// Margin: the envelope fits the default reservation up to 10^10
		// keys, and at 10^9 it needs less than a tenth of it.
		require.Less(t, boundHigh, int64(defaultReserve), "%.0e keys", float64(n))
		if n == 1e9 {
			require.Less(t, boundHigh, int64(defaultReserve/10))
			require.Less(t, float64(live)/float64(keys), 10.0, "index bytes per key at 10^9")
		}
	}
}

// TestRungsAtBillionPerShard runs the real index on a sample of shards
// holding as many random keys as shards hold at 10^9 keys (15259 ± 124),
// inserted in random order, and checks the simulation's assumptions: the
// shards' blocks hold fewer bytes than the envelope of two rungs above
// each count's rung, no shard sits at a rung below its count's, and the
// address space the allocator carved stays within addressBound.
func TestRungsAtBillionPerShard(t *testing.T) {
	shards := 128
	if testing.Short() || raceEnabled {
		shards = 16
	}
	rng := rand.New(rand.NewPCG(1, 1e9))
	all := shardCounts(rng, 1e9)
	var hashes []uint64
	for s := 0; s < shards; s++ {
		for i := 0; i < all[s]; i++ {
			hashes = append(hashes, mkHash(s, rng.Uint64N(1<<FPBits), rng.Uint64()))
		}
	}
	rng.Shuffle(len(hashes), func(i, j int) { hashes[i], hashes[j] = hashes[j], hashes[i] })
	ix := newIndex(t, testReserve)
	for i, h := range hashes {
		_, _, _, err := ix.Put(h, uint64(i+1), noMatchTest)
		require.NoError(t, err)
	}
	require.NoError(t, ix.Check())
	above := map[int]int{}
	rungs := make([]int, NumShards)
	var model, envelope int64
	for s := range rungs {
		rungs[s] = -1
	}
	for s := 0; s < shards; s++ {
		r := rungOf(shardCap(ix, s))
		d := r - loadRung(all[s])
		require.GreaterOrEqual(t, d, 0, "shard %d: rung %d for %d keys", s, r, all[s])
		require.LessOrEqual(t, d, 5, "shard %d: rung %d for %d keys", s, r, all[s])
		above[d]++
		rungs[s] = r
		model += int64(ladder[loadRung(all[s])]+Overflow) * 8
		envelope += int64(ladder[loadRung(all[s])+2]+Overflow) * 8
	}
	st := ix.Stats()
	bound, live := addressBound(rungs, 1)
	require.Equal(t, live, st.LiveBytes)
	require.Less(t, live, envelope, "the simulation's envelope")
	require.LessOrEqual(t, st.AddressBytes, bound)
	t.Logf("%d shards, %d keys: shards by rungs above the count's: %v; %.2f B/key (count model %.2f, envelope %.2f); address %d MiB (bound %d MiB)",
		shards, len(hashes), above, float64(live)/float64(len(hashes)), float64(model)/float64(len(hashes)),
		float64(envelope)/float64(len(hashes)), st.AddressBytes>>20, bound>>20)
}

func noMatchTest(uint64) (bool, bool) { return false, false }
