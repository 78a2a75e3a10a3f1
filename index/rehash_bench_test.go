package index

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// BenchmarkRehash: one shard's entries (sorted, as LoadShard and grow have
// them) rehashed into a block of the rung a load gives them.
func BenchmarkRehash(b *testing.B) {
	const n = 15_000
	rnd := rand.New(rand.NewPCG(1, 2))
	src := make([]uint64, n)
	for i := range src {
		src[i] = Slot(rnd.Uint64N(1<<FPBits), uint64(i+1))
	}
	slices.Sort(src)
	dst := make([]uint64, ladder[loadRung(n)]+Overflow)
	b.SetBytes(int64(len(dst) * 8))
	for b.Loop() {
		if !rehash(src, dst) {
			b.Fatal("entries do not fit")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}
