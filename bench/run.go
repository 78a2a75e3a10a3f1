package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Run executes the benchmark described by cfg: open, load, the workload's
// run phase, measurements, close, a timed reopen and (with Verify) a check
// of every record. It returns the report even when it also returns an
// error, as far as the run got.
func Run(cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir != "" && !cfg.ReuseDir {
		if err := checkEmptyDir(dir); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "marlin-bench-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	rep := newReport(cfg)
	if cfg.Keep || cfg.Dir != "" {
		rep.Dir = dir
	}
	opts := engineOptions(cfg)
	r := &runner{cfg: cfg, rep: rep}
	r.inserted.Store(cfg.Keys)
	if cfg.Workload == "mixed" && cfg.Mix.Delete > 0 {
		// Allocated (and touched) before the baseline memory reading, so
		// it does not count as the engine's.
		r.track = newPresence(cfg.Keys)
	}
	rss0 := settledRSSAnon()
	start := time.Now()
	db, err := engine.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	rep.OpenSecs = time.Since(start).Seconds()
	r.db = db
	err = r.load()
	if err == nil && cfg.Workload != "load" {
		err = r.run()
	}
	if err == nil {
		err = db.Sync()
	}
	if err == nil {
		err = r.measure(rss0)
	}
	start = time.Now()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	rep.CloseSecs = time.Since(start).Seconds()
	rep.Errors = r.errs.Load()
	if err != nil {
		return rep, err
	}

	start = time.Now()
	db, err = engine.Open(dir, opts)
	if err != nil {
		return rep, fmt.Errorf("reopen: %w", err)
	}
	rep.RestartSecs = time.Since(start).Seconds()
	r.db = db
	if st, err := db.Stats(); err == nil {
		rep.RestartFromSnapshot = st.OpenedFromSnapshot
		rep.RestartReplayed = st.RecordsReplayed
		if st.Keys != rep.ExpectedKeys {
			r.wrong("after restart: %d keys in the index, want %d", st.Keys, rep.ExpectedKeys)
		}
	}
	if cfg.Verify {
		err = r.verify()
		rep.Verified = err == nil
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	rep.Errors = r.errs.Load()
	if err == nil && rep.Errors > 0 {
		err = fmt.Errorf("%d operations returned wrong results", rep.Errors)
	}
	return rep, err
}

func engineOptions(cfg Config) *engine.Options {
	opts := &engine.Options{Sync: cfg.Sync, SegmentSize: cfg.Segment,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if cfg.KeyMax > 250 {
		opts.MaxKeySize = cfg.KeyMax
	}
	if cfg.ValueMax > 1<<20 {
		opts.MaxValueSize = cfg.ValueMax
	}
	return opts
}

type runner struct {
	cfg      Config
	db       *engine.DB
	rep      *Report
	inserted atomic.Uint64 // ids below this were handed out for insertion
	track    *presence     // which ids the mixed workload deleted; nil if it does not delete
	errs     atomic.Int64  // wrong results
	budget   atomic.Int64  // operations of the run phase not yet claimed
	workers  []*worker     // the current phase's
	mu       sync.Mutex    // guards rep.Wrong
}

// phase runs body on every goroutine and folds their histograms into a
// Phase, printing progress meanwhile. total (0 if unknown) is for the
// progress line.
func (r *runner) phase(name string, total int64, body func(w *worker) error) error {
	r.workers = make([]*worker, r.cfg.Goroutines)
	for i := range r.workers {
		r.workers[i] = r.newWorker(i)
	}
	stop := make(chan struct{})
	progDone := make(chan struct{})
	go r.progress(name, total, stop, progDone)
	tl := make(chan []Sample, 1)
	go func() { tl <- sampleRate(r.completed, stop) }()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, len(r.workers))
	for _, w := range r.workers {
		wg.Go(func() {
			if err := body(w); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-progDone
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p := Phase{Name: name, Ops: r.completed(), Seconds: elapsed.Seconds(), Latency: map[string]Latency{}, Timeline: <-tl}
	p.OpsPerSec = float64(p.Ops) / p.Seconds
	for k := range numOps {
		hs := make([]*Histogram, len(r.workers))
		for i, w := range r.workers {
			hs[i] = w.hists[k]
		}
		if l, ok := MergeSummaries(hs); ok {
			p.Latency[opNames[k]] = l
		}
	}
	r.workers = nil
	r.rep.Phases = append(r.rep.Phases, p)
	return nil
}

// completed returns the operations the current phase's workers did.
func (r *runner) completed() int64 {
	var n int64
	for _, w := range r.workers {
		n += w.done.Load()
	}
	return n
}

// load inserts ids [0, Keys), each goroutine a contiguous range, in
// batches of BatchSize (smaller if a batch would fill a quarter segment).
func (r *runner) load() error {
	c := r.cfg
	g := uint64(c.Goroutines)
	segment := c.Segment
	if segment == 0 {
		segment = 128 << 20
	}
	return r.phase("load", int64(c.Keys), func(w *worker) error {
		lo, hi := c.Keys*uint64(w.id)/g, c.Keys*uint64(w.id+1)/g
		var b engine.Batch
		bytes := int64(0)
		for id := lo; id < hi; id++ {
			w.key = Key(w.key, id, c.keySize(id))
			w.val = Value(w.val, id, 0, w.valueSize())
			if c.BatchSize == 1 {
				t := time.Now()
				if err := r.db.Put(w.key, w.val); err != nil {
					return err
				}
				w.record(opInsert, time.Since(t))
				w.done.Add(1)
				continue
			}
			b.Put(w.key, w.val)
			bytes += int64(len(w.key) + len(w.val) + 32)
			if b.Len() == c.BatchSize || id == hi-1 || bytes >= segment/4 {
				t := time.Now()
				if err := r.db.Write(&b); err != nil {
					return err
				}
				w.record(opBatch, time.Since(t))
				w.done.Add(int64(b.Len()))
				b.Reset()
				bytes = 0
			}
		}
		return nil
	})
}

// dist returns the run phase's key distribution.
func (r *runner) dist() Distribution {
	dist := r.cfg.Dist
	if r.cfg.Workload == "d" {
		dist = "latest"
	}
	switch dist {
	case "zipfian":
		return NewZipfian(r.cfg.Keys, ZipfianConstant, false)
	case "scrambled":
		return NewZipfian(r.cfg.Keys, ZipfianConstant, true)
	case "latest":
		return NewLatest(r.cfg.Keys, func() uint64 { return r.inserted.Load() - 1 })
	}
	return Uniform{N: r.cfg.Keys}
}

// run executes the workload's operation mix for Ops operations or for
// Duration.
func (r *runner) run() error {
	c := r.cfg
	dist := r.dist()
	deadline := time.Now().Add(c.Duration)
	r.budget.Store(c.Ops)
	total := c.Ops
	chunk := max(1, min(256, c.Ops/int64(16*c.Goroutines)))
	if c.Workload == "iterate" {
		total *= int64(c.Keys)
		chunk = 1
	}
	return r.phase("run "+c.Workload, total, func(w *worker) error {
		left := int64(0) // operations claimed from the budget, not yet done
		for n := 0; ; n++ {
			if c.Ops > 0 {
				if left == 0 {
					got := r.budget.Add(-chunk) + chunk
					if got <= 0 {
						return nil
					}
					left = min(chunk, got)
				}
				left--
			} else if (n%64 == 0 || c.Workload == "iterate") && time.Now().After(deadline) {
				return nil
			}
			if err := w.op(dist); err != nil {
				return err
			}
		}
	})
}

// wrong counts a wrong result and keeps the first few descriptions.
func (r *runner) wrong(format string, args ...any) {
	if r.errs.Add(1) <= maxWrong {
		r.mu.Lock()
		r.rep.Wrong = append(r.rep.Wrong, fmt.Sprintf(format, args...))
		r.mu.Unlock()
	}
}

const maxWrong = 10

// checkEmptyDir refuses a data directory that holds anything: a run loads
// records of its own and checks every answer against them, so data
// already there makes answers wrong (a run once wrote into a database and
// then reported WRONG RESULTS). A directory that does not exist is fine.
func checkEmptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty: a benchmark loads records of its own and checks every answer, "+
			"so data already there would make answers wrong; give a new or empty --dir (or --reuse-dir to write into it anyway)", dir)
	}
	return nil
}
