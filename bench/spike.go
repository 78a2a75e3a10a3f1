package bench

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// The expire and evict workloads (marlin bench --workload expire|evict)
// measure what background reclamation costs foreground reads: open-loop
// gets of keys that stay (openloop.go), per second, while the engine
// reclaims a mass of keys. The report compares the get latency of the
// seconds when reclamation ran with that of the seconds when it did not
// (the bound: p99 at most twice).
//
//   - expire: Keys keys share one expiry, ExpireAt into the run; gets go
//     to Keys/10 keys without a TTL. The load runs under a stopped clock
//     (Options.Clock), so every TTL key has the same expiry to the
//     millisecond; the run's clock then moves with the wall clock.
//   - evict: cache mode (Options.MaxDiskBytes = MaxDisk). The load fills
//     about 85% of the limit; during the run a writer adds new keys at
//     WriteRate, which pushes the database over the limit again and
//     again, and gets go to the newest keys that fill half the limit,
//     which stay.

// SpikeConfig configures an expire or evict run.
type SpikeConfig struct {
	Workload  string // "expire" or "evict"
	Dir       string // data directory (a new temp dir if empty, removed unless Keep)
	Keep      bool
	Keys      uint64 // expire: keys sharing the TTL; evict: 0 sizes the load to 85% of MaxDisk
	Rate      int    // gets per second, all clients together
	Clients   int
	Duration  time.Duration
	KeySize   int
	ValueSize int
	Sync      engine.SyncMode
	Seed      uint64
	// ExpireAt (expire) is when the shared TTL runs out, from the run's
	// start.
	ExpireAt time.Duration
	// MaxDisk (evict) is the cache-mode limit; WriteRate the puts per
	// second of new keys during the run.
	MaxDisk   int64
	WriteRate int
	Progress  io.Writer
}

// DefaultSpikeConfig returns the defaults of workload w: expire, 10
// million keys expiring 20 s into a 150 s run; evict, a 1 GiB limit with
// 1 KB values written at 20,000 per second for 60 s.
func DefaultSpikeConfig(w string) SpikeConfig {
	c := SpikeConfig{Workload: w, Rate: 50_000, Clients: 4, KeySize: 16, Sync: engine.SyncNone, Seed: 1}
	if w == "evict" {
		c.Duration, c.ValueSize, c.MaxDisk, c.WriteRate = 60*time.Second, 1000, 1<<30, 20_000
	} else {
		c.Keys, c.Duration, c.ValueSize, c.ExpireAt = 10_000_000, 150*time.Second, 8, 20*time.Second
	}
	return c
}

func (c *SpikeConfig) validate() error {
	c.KeySize = max(c.KeySize, 8)
	switch {
	case c.Workload != "expire" && c.Workload != "evict":
		return fmt.Errorf("unknown spike workload %q", c.Workload)
	case c.Rate <= 0 || c.Clients < 1:
		return errors.New("rate and clients must be positive")
	case c.Duration < 2*time.Second:
		return errors.New("a run lasts at least two seconds")
	case c.ValueSize < 0:
		return errors.New("negative value size")
	case c.Workload == "expire" && (c.Keys == 0 || c.ExpireAt <= 0 || c.ExpireAt >= c.Duration):
		return errors.New("expire: keys must be positive and --expire-at within the run")
	case c.Workload == "evict" && (c.MaxDisk < 64<<20 || c.WriteRate <= 0):
		return errors.New("evict: --max-disk at least 64 MiB and --write-rate positive")
	}
	return nil
}

// SpikeSecond is one second of a run.
type SpikeSecond struct {
	Second int   `json:"second"` // 1 for the first second of the run
	Gets   int64 `json:"gets"`   // gets sent during the second
	Hits   int64 `json:"hits"`   // gets that found their key
	P50    int64 `json:"p50_ns"` // get latency, median
	P99    int64 `json:"p99_ns"` // get latency, 99th percentile
	Max    int64 `json:"max_ns"` // the slowest get
	// Reclaimed is the keys reclaimed during the second (expire: index
	// entries removed, by the expirer or by compaction; evict: keys
	// evicted), Active whether any were.
	Reclaimed int64 `json:"reclaimed"`
	Active    bool  `json:"active"`
	Puts      int64 `json:"puts"`       // puts during the second (evict: the writer)
	DiskBytes int64 `json:"disk_bytes"` // the segment files at the end of the second
}

// SpikeReport is a run's result.
type SpikeReport struct {
	Config  SpikeConfig   `json:"-"`       // what ran
	Load    time.Duration `json:"load_ns"` // how long the load took
	Loaded  uint64        `json:"loaded"`  // keys loaded before the run
	Seconds []SpikeSecond `json:"seconds"` // one per second of the run
	// Quiet and Active are the get latencies of the seconds without and
	// with reclamation (the first second, a warm-up, is left out); Ratio
	// is Active.P99 / Quiet.P99.
	Quiet, Active Latency
	Ratio         float64       `json:"p99_ratio"`  // Active.P99 over Quiet.P99
	All           Latency       `json:"all"`        // every get of the run
	Errors        int64         `json:"errors"`     // gets that failed (not a miss)
	MaxLag        time.Duration `json:"max_lag_ns"` // how far the clients fell behind their schedule at worst
	Reclaimed     int64         `json:"reclaimed"`  // keys reclaimed during the run (the per-second figures summed)
	Final         engine.Stats  `json:"-"`          // the engine's figures at the end
}

// spikeClock is the expire run's clock: stopped at base during the load,
// then base + skew + the time since the run started.
type spikeClock struct {
	base    time.Time
	skew    time.Duration
	started atomic.Pointer[time.Time]
}

func (c *spikeClock) now() time.Time {
	if s := c.started.Load(); s != nil {
		return c.base.Add(c.skew + time.Since(*s))
	}
	return c.base
}

// spikeRecord is about the bytes a record of the run takes on disk.
func spikeRecord(c *SpikeConfig) int64 { return int64(c.KeySize + c.ValueSize + 24) }

// spikeTTL is the TTL the expire run's keys share (on its own clock).
const spikeTTL = time.Hour

// RunSpike runs the expire or evict workload.
func RunSpike(cfg SpikeConfig) (*SpikeReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir != "" {
		if err := checkEmptyDir(dir); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "marlin-bench-"+cfg.Workload+"-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	clock := &spikeClock{base: time.Now(), skew: spikeTTL - cfg.ExpireAt}
	o := &engine.Options{Sync: cfg.Sync, Clock: clock.now}
	if cfg.Workload == "evict" {
		o.Clock = nil
		o.MaxDiskBytes = cfg.MaxDisk
		o.SegmentSize = min(128<<20, cfg.MaxDisk/16)
		if cfg.Keys == 0 {
			cfg.Keys = uint64(cfg.MaxDisk * 85 / 100 / spikeRecord(&cfg))
		}
	}
	db, err := engine.Open(dir, o)
	if err != nil {
		return nil, err
	}
	rep, runErr := runSpike(db, &cfg, clock)
	if cerr := db.Close(); cerr != nil && runErr == nil {
		runErr = cerr
	}
	return rep, runErr
}

func runSpike(db *engine.DB, cfg *SpikeConfig, clock *spikeClock) (*SpikeReport, error) {
	rep := &SpikeReport{Config: *cfg}
	// Load: expire writes Keys TTL keys then Keys/10 without; evict Keys.
	permanent := max(cfg.Keys/10, 1000)
	loadStart := time.Now()
	var b engine.Batch
	var kbuf, vbuf []byte
	total := cfg.Keys
	if cfg.Workload == "expire" {
		total += permanent
	}
	for id := uint64(0); id < total; id++ {
		kbuf = Key(kbuf, id, cfg.KeySize)
		vbuf = Value(vbuf[:0], id, 0, cfg.ValueSize)
		if cfg.Workload == "expire" && id < cfg.Keys {
			b.PutTTL(kbuf, vbuf, spikeTTL)
		} else {
			b.Put(kbuf, vbuf)
		}
		if b.Len() == 1000 || id == total-1 {
			if err := db.Write(&b); err != nil {
				return nil, err
			}
			b.Reset()
		}
		if cfg.Progress != nil && id%1_000_000 == 999_999 {
			fmt.Fprintf(cfg.Progress, "%s: loaded %d of %d keys\n", cfg.Workload, id+1, total)
		}
	}
	if err := db.Sync(); err != nil {
		return nil, err
	}
	rep.Load, rep.Loaded = time.Since(loadStart), total

	// The run: gets, plus (evict) a writer of new keys.
	var written atomic.Uint64 // evict: keys written so far
	written.Store(cfg.Keys)
	next := func(rng *rand.Rand) uint64 { return cfg.Keys + rng.Uint64N(permanent) }
	if cfg.Workload == "evict" {
		// The newest keys that fill half the limit: they stay.
		recent := uint64(cfg.MaxDisk / 2 / spikeRecord(cfg))
		next = func(rng *rand.Rand) uint64 {
			w := written.Load()
			return w - 1 - rng.Uint64N(min(w, recent))
		}
	}
	stopWriter := make(chan struct{})
	writerDone := make(chan error, 1)
	secs := int(cfg.Duration / time.Second)
	stats := make([]engine.Stats, secs+1)
	prev, err := db.Stats()
	if err != nil {
		return nil, err
	}
	var l *openLoop
	l = &openLoop{rate: cfg.Rate, clients: cfg.Clients, dur: cfg.Duration, seed: cfg.Seed, keySize: cfg.KeySize,
		next: next, get: db.AppendValue,
		tick: func(i int) {
			st, err := db.Stats()
			if err != nil {
				return
			}
			stats[i] = st
			if cfg.Progress != nil {
				_, _, sum := l.second(i)
				fmt.Fprintf(cfg.Progress, "%s: %3ds  p99 %s  expired %d  evicted %d  disk %d MiB\n", cfg.Workload, i+1,
					dur(sum.P99), st.ExpiredReclaimed, st.Evictions, st.DiskBytes>>20)
			}
		}}
	now := time.Now()
	clock.started.Store(&now)
	if cfg.Workload == "evict" {
		go func() { writerDone <- writeAtRate(db, cfg, &written, stopWriter) }()
	} else {
		writerDone <- nil
	}
	l.run()
	close(stopWriter)
	if err := <-writerDone; err != nil {
		return nil, err
	}

	rep.Errors, rep.MaxLag = l.errs.Load(), time.Duration(l.maxLag.Load())
	quiet, active := NewHistogram(), NewHistogram()
	for i := range secs {
		gets, hits, sum := l.second(i)
		st := stats[i]
		if st.Gets == 0 && i > 0 {
			st = stats[i-1] // a missed sample
		}
		s := SpikeSecond{Second: i + 1, Gets: gets, Hits: hits, P50: sum.P50, P99: sum.P99, Max: sum.Max,
			Puts: st.Puts - prev.Puts, DiskBytes: st.DiskBytes}
		if cfg.Workload == "expire" {
			// Index entries gone: the expirer's and those compaction
			// drops from segments it rewrites once they are mostly dead.
			s.Reclaimed = max(prev.Keys-st.Keys, 0)
		} else {
			s.Reclaimed = st.Evictions - prev.Evictions
		}
		s.Active = s.Reclaimed > 0
		prev = st
		rep.Reclaimed += s.Reclaimed
		rep.Seconds = append(rep.Seconds, s)
		if i == 0 {
			continue // warm-up
		}
		slot := &l.slots[i]
		if s.Active {
			active.Merge(slot.all)
		} else {
			quiet.Merge(slot.all)
		}
	}
	rep.Quiet, rep.Active = quiet.Summary(), active.Summary()
	if rep.Quiet.P99 > 0 && rep.Active.Count > 0 {
		rep.Ratio = float64(rep.Active.P99) / float64(rep.Quiet.P99)
	}
	rep.All, _, _ = l.totals()
	rep.Final, _ = db.Stats()
	return rep, nil
}

// writeAtRate puts new keys (ids from written on) at cfg.WriteRate per
// second until stop closes.
func writeAtRate(db *engine.DB, cfg *SpikeConfig, written *atomic.Uint64, stop <-chan struct{}) error {
	start := time.Now()
	interval := float64(time.Second) / float64(cfg.WriteRate)
	var kbuf, vbuf []byte
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if wait := time.Until(start.Add(time.Duration(float64(i) * interval))); wait > 100*time.Microsecond {
			time.Sleep(wait)
		}
		id := written.Load()
		kbuf = Key(kbuf, id, cfg.KeySize)
		vbuf = Value(vbuf[:0], id, 0, cfg.ValueSize)
		if err := db.Put(kbuf, vbuf); err != nil {
			return err
		}
		written.Store(id + 1)
	}
}
