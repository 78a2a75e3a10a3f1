package index

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoCollisionErrorByChance: a sparse shard whose final cluster fills
// the overflow area with distinct fingerprints must grow, not fail (a
// regression: a size heuristic returned ErrCollision for any such run, which
// random keys hit with small but real probability).
func TestNoCollisionErrorByChance(t *testing.T) {
	ix := newIndex(t, 1<<40) // one shard of 2000 keys reserves its class for every shard
	const sn = 7
	put := func(h, loc uint64) error {
		_, _, _, err := ix.Put(h, loc, func(uint64) (bool, bool) { return false, false })
		return err
	}
	// Grow the shard large, then empty it: capacity stays, count drops.
	var hs []uint64
	for i := 0; i < 2000; i++ {
		h := mkHash(sn, uint64(i)<<(FPBits-14), 0)
		hs = append(hs, h)
		require.NoError(t, put(h, locOf(i, 1)))
	}
	for i, h := range hs {
		require.True(t, ix.DeleteExact(h, locOf(i, 1)))
	}
	// 2*Overflow keys whose fingerprints all fall in the last home slot's
	// range at this capacity, spread over it as random ones would be: the
	// cluster overflows, and growth must separate it.
	c := uint64(shardCap(ix, sn) - Overflow)
	width := uint64(1<<FPBits) / c // fingerprints per home slot
	for i := uint64(0); i < 2*Overflow; i++ {
		fp := 1<<FPBits - 1 - i*width/(2*Overflow)
		require.NoError(t, put(mkHash(sn, fp, 0), locOf(5000+int(i), 1)), "key %d", i)
	}
	require.NoError(t, ix.Check())
	require.EqualValues(t, 2*Overflow, ix.Len())
}
