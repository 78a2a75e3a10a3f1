package bench

import (
	"math"
	"math/rand/v2"
)

// Distribution picks record ids in [0, n).
type Distribution interface {
	Next(r *rand.Rand) uint64
}

// Uniform picks every id with equal probability.
type Uniform struct{ N uint64 }

// Next returns a uniformly random id.
func (u Uniform) Next(r *rand.Rand) uint64 { return r.Uint64N(u.N) }

// Zipfian is YCSB's zipfian generator (Gray et al., "Quickly generating
// billion-record synthetic databases"): id 0 is the most popular, and the
// probability of id i is proportional to 1/(i+1)^theta. Unlike math/rand's
// Zipf it accepts theta < 1 (YCSB uses 0.99).
type Zipfian struct {
	n                 uint64
	theta, alpha, eta float64
	zetan, half2theta float64
	scrambled         bool
}

// ZipfianConstant is YCSB's default skew.
const ZipfianConstant = 0.99

// NewZipfian returns a zipfian generator over [0, n). With scrambled set,
// popular ids are spread over the key space by a hash (YCSB's
// ScrambledZipfianGenerator), instead of being the smallest ids.
func NewZipfian(n uint64, theta float64, scrambled bool) *Zipfian {
	z := &Zipfian{n: n, theta: theta, scrambled: scrambled}
	z.zetan = zeta(n, theta)
	zeta2 := zeta(2, theta)
	z.alpha = 1 / (1 - theta)
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/z.zetan)
	z.half2theta = 1 + math.Pow(0.5, theta)
	return z
}

func zeta(n uint64, theta float64) float64 {
	var s float64
	for i := uint64(1); i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// Next returns the next id.
func (z *Zipfian) Next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	var v uint64
	switch {
	case uz < 1:
		v = 0
	case uz < z.half2theta:
		v = 1
	default:
		v = uint64(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
		v = min(v, z.n-1)
	}
	if z.scrambled {
		v = fnv64(v) % z.n
	}
	return v
}

// Prob returns the probability of rank i (0-based) before scrambling.
func (z *Zipfian) Prob(i uint64) float64 {
	return 1 / math.Pow(float64(i+1), z.theta) / z.zetan
}

func fnv64(x uint64) uint64 {
	h := uint64(0xCBF29CE484222325)
	for range 8 {
		h ^= x & 0xff
		h *= 0x100000001B3
		x >>= 8
	}
	return h
}

// Latest favours the most recently inserted ids: the distance back from
// the newest id is zipfian (YCSB's "latest", for workload D).
type Latest struct {
	z    *Zipfian
	Last func() uint64 // newest inserted id
}

// NewLatest returns a latest-biased generator over ids up to last().
func NewLatest(n uint64, last func() uint64) *Latest {
	return &Latest{z: NewZipfian(n, ZipfianConstant, false), Last: last}
}

// Next returns the next id.
func (l *Latest) Next(r *rand.Rand) uint64 {
	last := l.Last()
	d := l.z.Next(r)
	if d > last {
		return last
	}
	return last - d
}
