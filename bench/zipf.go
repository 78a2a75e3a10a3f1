package bench

import (
	"math"
	"math/rand/v2"
)

// Distribution picks record ids.
type Distribution interface {
	Next(r *rand.Rand) uint64
}

// Uniform picks every id in [0, N) with equal probability.
type Uniform struct {
	N uint64 // the number of ids
}

// Next returns a uniformly random id.
func (u Uniform) Next(r *rand.Rand) uint64 { return r.Uint64N(u.N) }

// ZipfianConstant is YCSB's default skew.
const ZipfianConstant = 0.99

// Zipfian picks ids in [0, n) with P(rank i) proportional to 1/(i+1)^theta,
// as YCSB's zipfian request distribution does (theta 0.99 by default).
//
// YCSB samples with Gray et al.'s closed-form approximation, which gives
// rank 2 about 17% more than its share and the tail about 3.5% less.
// Zipfian instead samples exactly, by rejection-inversion (Hörmann and
// Derflinger, "Rejection-inversion to generate variates from monotone
// discrete distributions", 1996; the method of Apache Commons' Zipf
// sampler): O(1) time and memory per draw, any theta > 0.
//
// Unscrambled, id 0 is the most popular. Scrambled (YCSB's
// ScrambledZipfianGenerator), the ranks are mapped to ids by a
// pseudo-random permutation of [0, n), so popular ids are spread over the
// key space; being a bijection, it keeps the frequencies exactly.
type Zipfian struct {
	n         uint64
	theta     float64
	zetan     float64
	hx1, hn   float64 // hIntegral(1.5) - 1, hIntegral(n + 0.5)
	s         float64 // acceptance shortcut
	scrambled bool
	perm      permutation
}

// NewZipfian returns a zipfian generator over [0, n) (n > 0, theta > 0).
func NewZipfian(n uint64, theta float64, scrambled bool) *Zipfian {
	z := &Zipfian{n: n, theta: theta, scrambled: scrambled}
	z.zetan = zeta(n, theta)
	z.hx1 = z.hIntegral(1.5) - 1
	z.hn = z.hIntegral(float64(n) + 0.5)
	z.s = 2 - z.hIntegralInverse(z.hIntegral(2.5)-z.h(2))
	if scrambled {
		z.perm = newPermutation(n, 0x5DEECE66D)
	}
	return z
}

// Next returns the next id.
func (z *Zipfian) Next(r *rand.Rand) uint64 {
	k := z.rank(r)
	if z.scrambled {
		return z.perm.apply(k)
	}
	return k
}

// rank draws a 0-based rank.
func (z *Zipfian) rank(r *rand.Rand) uint64 {
	for {
		// u is uniform in (hx1, hn]; the density h lies under hIntegral's
		// derivative, and the rejection test corrects the difference.
		u := z.hn + r.Float64()*(z.hx1-z.hn)
		x := z.hIntegralInverse(u)
		k := math.Floor(x + 0.5)
		k = min(max(k, 1), float64(z.n))
		if k-x <= z.s || u >= z.hIntegral(k+0.5)-z.h(k) {
			return uint64(k) - 1
		}
	}
}

// Prob returns the probability of rank i (0-based; before scrambling).
func (z *Zipfian) Prob(i uint64) float64 {
	return math.Pow(float64(i+1), -z.theta) / z.zetan
}

// Rank returns the rank (0 = most popular) of id: the inverse of Next's
// mapping from ranks to ids.
func (z *Zipfian) Rank(id uint64) uint64 {
	if z.scrambled {
		return z.perm.invert(id)
	}
	return id
}

// h is the unnormalized probability of rank x (1-based).
func (z *Zipfian) h(x float64) float64 { return math.Exp(-z.theta * math.Log(x)) }

// hIntegral is an antiderivative of h: (x^(1-theta) - 1) / (1-theta), or
// log x when theta is 1.
func (z *Zipfian) hIntegral(x float64) float64 {
	lx := math.Log(x)
	return expm1x((1-z.theta)*lx) * lx
}

func (z *Zipfian) hIntegralInverse(x float64) float64 {
	t := max(x*(1-z.theta), -1)
	return math.Exp(log1px(t) * x)
}

// expm1x is (e^x - 1)/x, continuous at 0.
func expm1x(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Expm1(x) / x
	}
	return 1 + x*0.5*(1+x/3*(1+0.25*x))
}

// log1px is log(1+x)/x, continuous at 0.
func log1px(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Log1p(x) / x
	}
	return 1 - x*(0.5-x*(1.0/3-0.25*x))
}

// zeta returns sum_{i=1..n} i^-theta: exactly up to a million terms, and
// with the Euler-Maclaurin formula for the rest (relative error far below
// 1e-12), so large key counts cost no time.
func zeta(n uint64, theta float64) float64 {
	const exact = 1 << 20
	var s float64
	for i := uint64(1); i <= min(n, exact); i++ {
		s += math.Pow(float64(i), -theta)
	}
	if n <= exact {
		return s
	}
	a, b := float64(exact), float64(n)
	var integral float64
	if theta == 1 {
		integral = math.Log(b / a)
	} else {
		integral = (math.Pow(b, 1-theta) - math.Pow(a, 1-theta)) / (1 - theta)
	}
	// sum_{a+1..b} f = integral_a^b f + (f(b)-f(a))/2 + (f'(b)-f'(a))/12 - ...
	f := func(x float64) float64 { return math.Pow(x, -theta) }
	df := func(x float64) float64 { return -theta * math.Pow(x, -theta-1) }
	return s + integral + (f(b)-f(a))/2 + (df(b)-df(a))/12
}

// permutation is a pseudo-random bijection on [0, n): a 4-round Feistel
// network on the smallest even number of bits covering n, with cycle
// walking (values that land outside [0, n) are permuted again; on average
// fewer than 4 rounds of it, since the domain is under 4n).
type permutation struct {
	n    uint64
	half uint // bits per Feistel half
	keys [4]uint64
}

func newPermutation(n uint64, seed uint64) permutation {
	p := permutation{n: n, half: 1}
	for p.half < 32 && uint64(1)<<(2*p.half) < n {
		p.half++
	}
	for i := range p.keys {
		seed = splitmix64(seed)
		p.keys[i] = seed
	}
	return p
}

func (p permutation) round(x uint64, k uint64) uint64 {
	return splitmix64(x^k) & (1<<p.half - 1)
}

func (p permutation) encrypt(x uint64) uint64 {
	mask := uint64(1)<<p.half - 1
	l, r := x>>p.half, x&mask
	for _, k := range p.keys {
		l, r = r, l^p.round(r, k)
	}
	return l<<p.half | r
}

func (p permutation) decrypt(x uint64) uint64 {
	mask := uint64(1)<<p.half - 1
	l, r := x>>p.half, x&mask
	for i := len(p.keys) - 1; i >= 0; i-- {
		l, r = r^p.round(l, p.keys[i]), l
	}
	return l<<p.half | r
}

func (p permutation) apply(x uint64) uint64 {
	for {
		x = p.encrypt(x)
		if x < p.n {
			return x
		}
	}
}

func (p permutation) invert(x uint64) uint64 {
	for {
		x = p.decrypt(x)
		if x < p.n {
			return x
		}
	}
}

// Latest favours the most recently inserted ids (YCSB's "latest", for
// workload D): the distance back from the newest id is zipfian.
type Latest struct {
	z    *Zipfian
	Last func() uint64 // newest inserted id
}

// NewLatest returns a latest-biased generator over ids up to last(); the
// distance back is zipfian over [0, n).
func NewLatest(n uint64, last func() uint64) *Latest {
	return &Latest{z: NewZipfian(n, ZipfianConstant, false), Last: last}
}

// Next returns the next id: never above Last(), and Last() itself most
// often.
func (l *Latest) Next(r *rand.Rand) uint64 {
	last := l.Last()
	d := l.z.Next(r)
	if d > last {
		d %= last + 1
	}
	return last - d
}
