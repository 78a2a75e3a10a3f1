package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// chiSquare returns the statistic of counts against probabilities p.
func chiSquare(counts []int, p func(i int) float64, samples int) float64 {
	var chi float64
	for i, c := range counts {
		e := p(i) * float64(samples)
		chi += (float64(c) - e) * (float64(c) - e) / e
	}
	return chi
}

// chiCritical approximates the chi-square quantile with df degrees of
// freedom at the standard normal quantile z (Wilson-Hilferty).
func chiCritical(df int, z float64) float64 {
	d := float64(df)
	return d * math.Pow(1-2/(9*d)+z*math.Sqrt(2/(9*d)), 3)
}

const z999 = 3.09 // P(Z > z) = 0.001

func sample(d Distribution, n, samples int, seed uint64) []int {
	r := rand.New(rand.NewPCG(seed, 99))
	counts := make([]int, n)
	for range samples {
		counts[d.Next(r)]++
	}
	return counts
}

func TestZipfianMatchesTheory(t *testing.T) {
	const n, samples = 1000, 1_000_000
	z := NewZipfian(n, ZipfianConstant, false)
	var total float64
	for i := range uint64(n) {
		total += z.Prob(i)
	}
	require.InDelta(t, 1, total, 1e-9, "probabilities sum to 1")

	counts := sample(z, n, samples, 1)
	chi := chiSquare(counts, func(i int) float64 { return z.Prob(uint64(i)) }, samples)
	crit := chiCritical(n-1, z999)
	t.Logf("chi-square %.0f, critical value %.0f (df %d, p 0.001)", chi, crit, n-1)
	require.Less(t, chi, crit, "frequencies do not follow 1/(i+1)^0.99")

	// Rank-frequency: each of the top ranks within 4 standard deviations,
	// and the log-log slope is -theta.
	for i := range 50 {
		e := z.Prob(uint64(i)) * samples
		require.InDelta(t, e, float64(counts[i]), 4*math.Sqrt(e), "rank %d", i)
	}
	var sx, sy, sxx, sxy float64
	m := 200.0
	for i := range int(m) {
		x, y := math.Log(float64(i+1)), math.Log(float64(counts[i]))
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	slope := (m*sxy - sx*sy) / (m*sxx - sx*sx)
	require.InDelta(t, -ZipfianConstant, slope, 0.03)
}

// ycsbZipfian is YCSB's approximate sampler (Gray et al.), kept here to
// show that the chi-square check above tells a close but wrong
// distribution apart.
type ycsbZipfian struct {
	n                        uint64
	zetan, alpha, eta, half2 float64
}

func newYCSBZipfian(n uint64, theta float64) *ycsbZipfian {
	z := &ycsbZipfian{n: n, zetan: zeta(n, theta), alpha: 1 / (1 - theta), half2: 1 + math.Pow(0.5, theta)}
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta(2, theta)/z.zetan)
	return z
}

func (z *ycsbZipfian) Next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	switch {
	case uz < 1:
		return 0
	case uz < z.half2:
		return 1
	}
	return min(uint64(float64(z.n)*math.Pow(z.eta*u-z.eta+1, z.alpha)), z.n-1)
}

func TestChiSquareRejectsApproximateZipfian(t *testing.T) {
	const n, samples = 1000, 1_000_000
	exact := NewZipfian(n, ZipfianConstant, false)
	counts := sample(newYCSBZipfian(n, ZipfianConstant), n, samples, 1)
	chi := chiSquare(counts, func(i int) float64 { return exact.Prob(uint64(i)) }, samples)
	require.Greater(t, chi, chiCritical(n-1, z999))
}

func TestZipfianSmallAndOtherThetas(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	one := NewZipfian(1, ZipfianConstant, true)
	for range 100 {
		require.Equal(t, uint64(0), one.Next(r))
	}
	for _, theta := range []float64{0.5, 1, 1.5} {
		const n, samples = 100, 300_000
		z := NewZipfian(n, theta, false)
		counts := sample(z, n, samples, 2)
		chi := chiSquare(counts, func(i int) float64 { return z.Prob(uint64(i)) }, samples)
		require.Less(t, chi, chiCritical(n-1, z999), "theta %v", theta)
	}
}

func TestZetaLargeN(t *testing.T) {
	n := uint64(1<<20 + 700_000)
	var exact float64
	for i := uint64(1); i <= n; i++ {
		exact += math.Pow(float64(i), -ZipfianConstant)
	}
	require.InEpsilon(t, exact, zeta(n, ZipfianConstant), 1e-11)
	start := NewZipfian(1_000_000_000, ZipfianConstant, true) // cheap even for a billion keys
	require.InDelta(t, 1/zeta(1_000_000_000, ZipfianConstant), start.Prob(0), 1e-15)
}

func TestPermutationIsBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 7, 100, 1000, 1<<16 + 1, 123_457} {
		p := newPermutation(n, 42)
		seen := make([]bool, n)
		for x := range n {
			y := p.apply(x)
			require.Less(t, y, n)
			require.False(t, seen[y], "n %d: %d hit twice", n, y)
			seen[y] = true
			require.Equal(t, x, p.invert(y))
		}
	}
}

func TestScrambledZipfian(t *testing.T) {
	const n, samples = 1000, 500_000
	plain := NewZipfian(n, ZipfianConstant, false)
	scr := NewZipfian(n, ZipfianConstant, true)
	// The same random stream gives the same ranks, mapped by a bijection.
	r1, r2 := rand.New(rand.NewPCG(7, 8)), rand.New(rand.NewPCG(7, 8))
	pc, sc := make([]int, n), make([]int, n)
	for range samples {
		a, b := plain.Next(r1), scr.Next(r2)
		require.Equal(t, scr.perm.apply(a), b)
		require.Equal(t, a, scr.Rank(b))
		pc[a]++
		sc[b]++
	}
	// Same multiset of frequencies...
	ps, ss := slices.Clone(pc), slices.Clone(sc)
	slices.Sort(ps)
	slices.Sort(ss)
	require.Equal(t, ps, ss)
	// ...over ids spread across the key space: the hottest ten are not the
	// smallest ten, and both halves of the range hold hot ids.
	hot := make([]int, n)
	for i := range hot {
		hot[i] = i
	}
	slices.SortFunc(hot, func(a, b int) int { return sc[b] - sc[a] })
	lowHalf := 0
	for _, id := range hot[:10] {
		if id < n/2 {
			lowHalf++
		}
	}
	require.NotEqual(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, hot[:10])
	require.Greater(t, lowHalf, 0)
	require.Less(t, lowHalf, 10)
	// Chi-square by rank.
	chi := chiSquare(sc, func(id int) float64 { return scr.Prob(scr.Rank(uint64(id))) }, samples)
	require.Less(t, chi, chiCritical(n-1, z999))
}

func TestLatestFollowsInserts(t *testing.T) {
	const n = 1000
	last := uint64(n - 1)
	l := NewLatest(n, func() uint64 { return last })
	r := rand.New(rand.NewPCG(9, 10))
	for step := range 5 {
		counts := map[uint64]int{}
		const draws = 50_000
		for range draws {
			id := l.Next(r)
			require.LessOrEqual(t, id, last, "above the newest id")
			require.Greater(t, id+n, last, "further back than n")
			counts[id]++
		}
		// The newest id is the most frequent, then the one before it.
		for id, c := range counts {
			if id != last {
				require.Greater(t, counts[last], c, "step %d: id %d beats the newest", step, id)
			}
		}
		require.Greater(t, counts[last-1], counts[last-10])
		require.InDelta(t, l.z.Prob(0)*draws, float64(counts[last]), 4*math.Sqrt(l.z.Prob(0)*draws))
		last += 1000 // a thousand inserts: the hot spot moves with them
	}
	// Before n ids exist, draws stay within [0, last].
	last = 4
	for range 10_000 {
		require.LessOrEqual(t, l.Next(r), uint64(4))
	}
}

func TestUniformCoversRange(t *testing.T) {
	const n, samples = 1000, 200_000
	counts := sample(Uniform{N: n}, n, samples, 3)
	for id, c := range counts {
		require.Positive(t, c, "id %d never drawn", id)
	}
	chi := chiSquare(counts, func(int) float64 { return 1.0 / n }, samples)
	require.Less(t, chi, chiCritical(n-1, z999))
	r := rand.New(rand.NewPCG(1, 1))
	for range 1000 {
		require.Less(t, Uniform{N: 3}.Next(r), uint64(3))
	}
}
