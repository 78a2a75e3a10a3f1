package engine

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestSpillRoundTrip: entries read back from the spill's 10-byte form keep
// the location and every hash bit the index uses (shard and fingerprint),
// land in the partition of their hash, and the file holds 10 bytes an
// entry.
func TestSpillRoundTrip(t *testing.T) {
	for _, nparts := range []int{1, 2, 256, 4096} {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll("/d", 0o755))
		sp, err := newSpill(fs, filepath.Join("/d", bulkSpillName), nparts)
		require.NoError(t, err)
		rnd := rand.New(rand.NewPCG(uint64(nparts), 1))
		const n = 3*spillBlockEntries + 17
		type ent struct{ h, loc uint64 }
		want := make([][]ent, nparts)
		for i := range n {
			h := rnd.Uint64()
			if i%7 == 0 {
				h |= 1<<56 - 1 // ones in every bit below the top byte
			}
			loc := segment.Loc(uint16(rnd.IntN(segment.MaxSegments)), int64(rnd.IntN(1<<27))&^(segment.Align-1))
			if i == 1 {
				loc = index.LocMask // the largest location
			}
			require.NoError(t, sp.add(h, loc))
			want[sp.part(h)] = append(want[sp.part(h)], ent{h, loc})
		}
		require.NoError(t, sp.finish())
		require.EqualValues(t, n*spillEntryBytes, sp.off)
		total := 0
		for p := range nparts {
			got := make([]spillEntry, sp.count[p])
			require.Len(t, got, len(want[p]))
			require.NoError(t, sp.read(p, got))
			for i, g := range got {
				w := want[p][i]
				require.Equal(t, w.loc, g.loc, "parts %d, partition %d, entry %d", nparts, p, i)
				require.Equal(t, p, sp.part(g.h))
				ws, wfp := index.Split(w.h)
				gs, gfp := index.Split(g.h)
				require.Equal(t, ws, gs)
				require.Equal(t, wfp, gfp)
				kept := 64 - sp.bits - spillHashBits
				require.Equal(t, w.h>>kept, g.h>>kept, "stored hash bits")
				require.Zero(t, g.h&(1<<kept-1))
			}
			total += len(got)
		}
		require.Equal(t, n, total)
		require.NoError(t, sp.remove())
	}
}
