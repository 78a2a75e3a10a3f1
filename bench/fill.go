package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"github.com/marlinkv/marlin/engine"
	fillq "github.com/marlinkv/marlin/fill"
)

// The fill workload (marlin bench --workload fill): cold traffic on an
// empty database with a read-through loader. Clients send Rate gets per
// second, open loop, over a zipfian key space; every miss answers at once
// and queues its key; a loader that takes LoadLatency per key fills it.
// The report shows, per second, the hit rate climbing, the reply
// latencies (hits and misses alike) and the fill queue's depth, as a
// table and an SVG chart.

// FillConfig configures a fill run.
type FillConfig struct {
	Dir      string        // data directory (a new temp dir if empty, removed unless Keep)
	Keep     bool          // keep the data directory
	Keys     uint64        // key space
	Rate     int           // gets per second, all clients together
	Duration time.Duration // length of the run
	Clients  int           // goroutines sending gets
	Theta    float64       // zipfian exponent (0.99: YCSB's)
	KeySize  int
	// LoadLatency is how long the loader takes per key; ValueSize the size
	// of what it returns.
	LoadLatency time.Duration
	ValueSize   int
	// Fill configures the fill queue (workers, queue size).
	Fill fillq.Options
	Sync engine.SyncMode
	Seed uint64
	// Progress, if set, receives a line per second.
	Progress io.Writer
}

// DefaultFillConfig is the cold-traffic scenario: 100,000 gets
// per second over 10 million zipfian keys, a 5 ms loader.
func DefaultFillConfig() FillConfig {
	return FillConfig{
		Keys: 10_000_000, Rate: 100_000, Duration: 60 * time.Second, Clients: 8, Theta: ZipfianConstant,
		KeySize: 16, LoadLatency: 5 * time.Millisecond, ValueSize: 100,
		Fill: fillq.Options{Workers: 512, QueueSize: 100_000}, Sync: engine.SyncPeriodic, Seed: 1,
	}
}

func (c *FillConfig) validate() error {
	switch {
	case c.Keys == 0:
		return errors.New("keys must be positive")
	case c.Rate <= 0:
		return errors.New("rate must be positive")
	case c.Duration < time.Second:
		return errors.New("a fill run lasts at least one second")
	case c.Clients < 1:
		return errors.New("clients must be at least 1")
	case c.Theta <= 0:
		return errors.New("zipfian theta must be positive")
	case c.LoadLatency < 0 || c.ValueSize < 0:
		return errors.New("negative load latency or value size")
	}
	c.KeySize = max(c.KeySize, 8)
	return nil
}

// FillSecond is one second of a fill run.
type FillSecond struct {
	Second   int     `json:"second"`   // 1 for the first second of the run
	Requests int64   `json:"requests"` // gets sent during the second
	Hits     int64   `json:"hits"`     // gets that found their key
	HitRate  float64 `json:"hit_rate"` // Hits over Requests
	// IdealHitRate is the hit rate a fill that took no time would reach:
	// the share of this second's gets whose key was asked for before.
	IdealHitRate float64 `json:"ideal_hit_rate"`
	P50          int64   `json:"p50_ns"`      // reply latency, median
	P99          int64   `json:"p99_ns"`      // reply latency, 99th percentile
	Max          int64   `json:"max_ns"`      // the slowest reply
	QueueDepth   int     `json:"queue_depth"` // at the end of the second
	InFlight     int     `json:"in_flight"`   // loads running at the end of the second
	Filled       uint64  `json:"filled"`      // loads stored during the second
	Dropped      uint64  `json:"dropped"`     // misses the full queue dropped
}

// FillReport is a fill run's result.
type FillReport struct {
	Config   FillConfig    `json:"-"`          // what ran
	Seconds  []FillSecond  `json:"seconds"`    // one per second of the run
	Requests int64         `json:"requests"`   // gets sent
	Hits     int64         `json:"hits"`       // gets that found their key
	Errors   int64         `json:"errors"`     // gets that failed (not a miss)
	Elapsed  time.Duration `json:"elapsed_ns"` // how long the gets ran
	// All, Hit and Miss are the reply latencies of every get, the hits and
	// the misses.
	All, Hit, Miss Latency
	// MaxLag is how far the clients fell behind their schedule at worst.
	MaxLag time.Duration `json:"max_lag_ns"`
	// SecondTo90 is the first second whose hit rate reached 90% (-1:
	// none).
	SecondTo90 int         `json:"second_to_90"`
	Fill       fillq.Stats `json:"fill"`
	DiskBytes  int64       `json:"disk_bytes"`
	Keys       int64       `json:"keys_stored"`
}

// RunFill runs the fill workload.
func RunFill(cfg FillConfig) (*FillReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir != "" {
		if err := checkEmptyDir(dir); err != nil {
			return nil, err // the run starts from an empty database
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "marlin-bench-fill-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	vsize := cfg.ValueSize
	latency := cfg.LoadLatency
	loader := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, 0, ctx.Err()
			}
		}
		return Value(nil, IDOfKey(key), 0, vsize), 0, nil
	}
	db, err := engine.Open(dir, &engine.Options{Sync: cfg.Sync, Loader: loader, Fill: cfg.Fill})
	if err != nil {
		return nil, err
	}
	rep, runErr := runFill(db, &cfg)
	st, serr := db.Stats()
	if serr == nil && rep != nil {
		rep.Fill, rep.DiskBytes, rep.Keys = st.Fill, st.DiskBytes, st.Keys
	}
	if cerr := db.Close(); cerr != nil && runErr == nil {
		runErr = cerr
	}
	return rep, runErr
}

func runFill(db *engine.DB, cfg *FillConfig) (*FillReport, error) {
	zipf := NewZipfian(cfg.Keys, cfg.Theta, true)
	secs := int(cfg.Duration / time.Second)
	samples := make([]fillq.Stats, secs+1)
	var l *openLoop
	l = &openLoop{rate: cfg.Rate, clients: cfg.Clients, dur: cfg.Duration, seed: cfg.Seed, keySize: cfg.KeySize,
		next: func(rng *rand.Rand) uint64 { return zipf.Next(rng) },
		get:  db.AppendValue,
		// Sample the queue once a second, print progress.
		tick: func(i int) {
			st, err := db.Stats()
			if err != nil {
				return
			}
			samples[i] = st.Fill
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "fill: %3ds  hit rate %5.1f%%  queue %6d  in flight %4d  filled %d\n",
					i+1, 100*l.hitRate(i), st.Fill.QueueDepth, st.Fill.InFlight, st.Fill.Filled)
			}
		}}
	l.run()

	rep := &FillReport{Config: *cfg, Elapsed: l.elapsed, Errors: l.errs.Load(), MaxLag: time.Duration(l.maxLag.Load()), SecondTo90: -1}
	ideal := newIdealHits(zipf, cfg.Keys, float64(cfg.Rate))
	var prev fillq.Stats
	for i := range secs {
		requests, hits, sum := l.second(i)
		fs := FillSecond{Second: i + 1, Requests: requests, Hits: hits,
			IdealHitRate: ideal.at(float64(i) + 0.5),
			P50:          sum.P50, P99: sum.P99, Max: sum.Max,
			QueueDepth: samples[i].QueueDepth, InFlight: samples[i].InFlight}
		fs.Filled = samples[i].Filled - prev.Filled
		fs.Dropped = samples[i].Dropped - prev.Dropped
		prev = samples[i]
		if requests > 0 {
			fs.HitRate = float64(hits) / float64(requests)
		}
		if fs.HitRate >= 0.9 && rep.SecondTo90 < 0 {
			rep.SecondTo90 = i + 1
		}
		rep.Seconds = append(rep.Seconds, fs)
		rep.Requests += requests
		rep.Hits += hits
	}
	rep.All, rep.Hit, rep.Miss = l.totals()
	return rep, nil
}

// idealHits computes the hit rate of a fill that takes no time: at time
// t (seconds) a get hits if its key was asked for before, which for a key
// of probability p happens with probability 1 - exp(-rate·p·t); the
// expected hit rate is the sum of p·that over the keys. The keys are
// grouped by rank into geometric buckets (1% wide), so this costs about
// 2,000 terms per point for 10 million keys.
type idealHits struct {
	p, n []float64 // per bucket: probability of one key, number of keys
	rate float64
}

func newIdealHits(z *Zipfian, keys uint64, rate float64) idealHits {
	var ih idealHits
	ih.rate = rate
	for lo := uint64(0); lo < keys; {
		hi := min(keys, max(lo+1, uint64(float64(lo)*1.01)))
		mid := lo + (hi-lo)/2
		ih.p = append(ih.p, z.Prob(mid))
		ih.n = append(ih.n, float64(hi-lo))
		lo = hi
	}
	return ih
}

func (ih idealHits) at(t float64) float64 {
	h := 0.0
	for i, p := range ih.p {
		h += ih.n[i] * p * -math.Expm1(-ih.rate*p*t)
	}
	return h
}
