package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Phase is the outcome of one phase of a run.
type Phase struct {
	Name      string             `json:"name"`
	Ops       int64              `json:"ops"`
	Seconds   float64            `json:"seconds"`
	OpsPerSec float64            `json:"ops_per_sec"`
	Latency   map[string]Latency `json:"latency"`
}

// Report is everything a run measured.
type Report struct {
	Workload    string  `json:"workload"`
	Dist        string  `json:"distribution"`
	Keys        uint64  `json:"keys"`
	Goroutines  int     `json:"goroutines"`
	BatchSize   int     `json:"batch_size"`
	Sync        string  `json:"sync"`
	KeySize     int     `json:"key_size"`
	ValueMin    int     `json:"value_min"`
	ValueMax    int     `json:"value_max"`
	Dir         string  `json:"dir,omitempty"`
	Phases      []Phase `json:"phases"`
	Errors      int64   `json:"errors"`
	KeysInDB    int64   `json:"keys_in_db"`
	RSSAnon     int64   `json:"rss_anon_bytes"`      // process RssAnon after the run
	RSSAnonUsed int64   `json:"rss_anon_used_bytes"` // growth of RssAnon since before Open
	Heap        int64   `json:"go_heap_bytes"`
	IndexBytes  int64   `json:"index_bytes"`
	DiskBytes   int64   `json:"disk_bytes"`
	RAMPerKey   float64 `json:"ram_bytes_per_key"`
	DiskPerKey  float64 `json:"disk_bytes_per_key"`
	WriteAmp    float64 `json:"write_amplification"`
	OpenSecs    float64 `json:"open_seconds"`
	RestartSecs float64 `json:"restart_seconds"`
}

// Run executes the benchmark described by cfg.
func Run(cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
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
	rep := &Report{Workload: cfg.Workload, Dist: cfg.Dist, Keys: cfg.Keys, Goroutines: cfg.Goroutines,
		BatchSize: cfg.BatchSize, Sync: cfg.Sync.String(), KeySize: max(cfg.KeySize, 8),
		ValueMin: cfg.ValueMin, ValueMax: cfg.ValueMax}
	if cfg.Keep || cfg.Dir != "" {
		rep.Dir = dir
	}
	opts := &engine.Options{Sync: cfg.Sync, SegmentSize: cfg.Segment,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if cfg.ValueMax > 1<<20 {
		opts.MaxValueSize = cfg.ValueMax
	}
	runtime.GC()
	rss0 := RSSAnon()
	start := time.Now()
	db, err := engine.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	rep.OpenSecs = time.Since(start).Seconds()
	r := &runner{cfg: cfg, db: db, rep: rep}
	r.inserted.Store(cfg.Keys)
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
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, err
	}
	start = time.Now()
	db, err = engine.Open(dir, opts)
	if err != nil {
		return rep, fmt.Errorf("reopen: %w", err)
	}
	rep.RestartSecs = time.Since(start).Seconds()
	if err := db.Close(); err != nil {
		return rep, err
	}
	if rep.Errors > 0 {
		return rep, fmt.Errorf("%d operations returned wrong results", rep.Errors)
	}
	return rep, nil
}

type runner struct {
	cfg      Config
	db       *engine.DB
	rep      *Report
	inserted atomic.Uint64 // ids below this were handed out for insertion
	errs     atomic.Int64
	done     atomic.Int64 // operations completed in the current phase
}

// opKinds names the histograms.
const (
	opRead = iota
	opUpdate
	opInsert
	opDelete
	opRMW
	opScan
	opBatch
	numOps
)

var opNames = [numOps]string{"read", "update", "insert", "delete", "rmw", "scan", "batch"}

type worker struct {
	r       *runner
	rnd     *rand.Rand
	hists   [numOps]hist
	key     []byte
	val     []byte
	buf     []byte
	version uint64
}

func (r *runner) newWorker(i int) *worker {
	w := &worker{r: r, rnd: rand.New(rand.NewPCG(r.cfg.Seed, uint64(i)+1))}
	for k := range w.hists {
		w.hists[k] = newHist()
	}
	return w
}

func (w *worker) valueSize() int {
	c := w.r.cfg
	if c.ValueMax == c.ValueMin {
		return c.ValueMin
	}
	return c.ValueMin + w.rnd.IntN(c.ValueMax-c.ValueMin+1)
}

// phase runs body on every goroutine and folds their histograms into a
// Phase, printing progress meanwhile.
func (r *runner) phase(name string, total int64, body func(w *worker, id int) error) error {
	r.done.Store(0)
	workers := make([]*worker, r.cfg.Goroutines)
	for i := range workers {
		workers[i] = r.newWorker(i)
	}
	stop := make(chan struct{})
	progDone := make(chan struct{})
	go r.progress(name, total, stop, progDone)
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, len(workers))
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := body(w, i); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-progDone
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	p := Phase{Name: name, Ops: r.done.Load(), Seconds: elapsed.Seconds(), Latency: map[string]Latency{}}
	p.OpsPerSec = float64(p.Ops) / p.Seconds
	for k := range numOps {
		h := newHist()
		for _, w := range workers {
			h.merge(w.hists[k])
		}
		if h.h.TotalCount() > 0 {
			p.Latency[opNames[k]] = h.summary()
		}
	}
	r.rep.Phases = append(r.rep.Phases, p)
	return nil
}

// load inserts ids [0, Keys), each goroutine a contiguous range.
func (r *runner) load() error {
	c := r.cfg
	g := uint64(c.Goroutines)
	return r.phase("load", int64(c.Keys), func(w *worker, i int) error {
		lo, hi := c.Keys*uint64(i)/g, c.Keys*uint64(i+1)/g
		var b engine.Batch
		for id := lo; id < hi; id++ {
			w.key = Key(w.key, id, c.KeySize)
			w.val = Value(w.val, id, 0, w.valueSize())
			if c.BatchSize == 1 {
				t := time.Now()
				if err := r.db.Put(w.key, w.val); err != nil {
					return err
				}
				w.hists[opInsert].record(time.Since(t))
				r.done.Add(1)
				continue
			}
			b.Put(w.key, w.val)
			if b.Len() == c.BatchSize || id == hi-1 {
				t := time.Now()
				if err := r.db.Write(&b); err != nil {
					return err
				}
				w.hists[opBatch].record(time.Since(t))
				r.done.Add(int64(b.Len()))
				b.Reset()
			}
		}
		return nil
	})
}

func (r *runner) dist() Distribution {
	switch r.cfg.Dist {
	case "zipfian":
		return NewZipfian(r.cfg.Keys, ZipfianConstant, false)
	case "scrambled":
		return NewZipfian(r.cfg.Keys, ZipfianConstant, true)
	case "latest":
		return NewLatest(r.cfg.Keys, func() uint64 { return r.inserted.Load() - 1 })
	}
	return Uniform{N: r.cfg.Keys}
}

// run executes the workload's operation mix.
func (r *runner) run() error {
	c := r.cfg
	dist := r.dist()
	if c.Workload == "d" {
		dist = NewLatest(c.Keys, func() uint64 { return r.inserted.Load() - 1 })
	}
	deadline := time.Now().Add(c.Duration)
	var budget atomic.Int64
	budget.Store(c.Ops)
	more := func() bool {
		if c.Ops > 0 {
			return budget.Add(-1) >= 0
		}
		return time.Now().Before(deadline)
	}
	return r.phase("run "+c.Workload, c.Ops, func(w *worker, _ int) error {
		for more() {
			if err := w.op(dist); err != nil {
				return err
			}
		}
		return nil
	})
}

// op performs one operation of the workload.
func (w *worker) op(dist Distribution) error {
	r, c := w.r, w.r.cfg
	p := w.rnd.IntN(100)
	switch c.Workload {
	case "a", "b", "f":
		reads := map[string]int{"a": 50, "b": 95, "f": 50}[c.Workload]
		id := dist.Next(w.rnd)
		if p < reads {
			return w.read(id, false)
		}
		if c.Workload == "f" {
			return w.rmw(id)
		}
		return w.write(opUpdate, id)
	case "c":
		return w.read(dist.Next(w.rnd), false)
	case "d":
		if p < 95 {
			return w.read(dist.Next(w.rnd), true)
		}
		return w.write(opInsert, r.inserted.Add(1)-1)
	case "miss":
		return w.read(c.Keys+w.rnd.Uint64N(1<<40), true)
	case "iterate":
		return w.scan()
	case "mixed":
		m := c.Mix
		x := w.rnd.IntN(m.Get + m.Put + m.Delete)
		id := dist.Next(w.rnd)
		switch {
		case x < m.Get:
			return w.read(id, true)
		case x < m.Get+m.Put:
			return w.write(opUpdate, id)
		}
		w.key = Key(w.key, id, c.KeySize)
		t := time.Now()
		if err := r.db.Delete(w.key); err != nil {
			return err
		}
		w.hists[opDelete].record(time.Since(t))
		r.done.Add(1)
	}
	return nil
}

// read gets id and checks the value. mayMiss tolerates absent keys (for
// workloads that delete, insert concurrently or read absent keys).
func (w *worker) read(id uint64, mayMiss bool) error {
	r := w.r
	w.key = Key(w.key, id, r.cfg.KeySize)
	t := time.Now()
	var err error
	w.buf, err = r.db.AppendValue(w.buf[:0], w.key)
	w.hists[opRead].record(time.Since(t))
	r.done.Add(1)
	switch {
	case errors.Is(err, engine.ErrNotFound):
		if !mayMiss {
			r.wrong("read %d: not found", id)
		}
	case err != nil:
		return err
	case !CheckValue(w.buf, id):
		r.wrong("read %d: value belongs to another key", id)
	}
	return nil
}

func (w *worker) write(kind int, id uint64) error {
	r := w.r
	w.version++
	w.key = Key(w.key, id, r.cfg.KeySize)
	w.val = Value(w.val, id, w.version, w.valueSize())
	t := time.Now()
	if err := r.db.Put(w.key, w.val); err != nil {
		return err
	}
	w.hists[kind].record(time.Since(t))
	r.done.Add(1)
	return nil
}

func (w *worker) rmw(id uint64) error {
	r := w.r
	w.key = Key(w.key, id, r.cfg.KeySize)
	t := time.Now()
	var err error
	w.buf, err = r.db.AppendValue(w.buf[:0], w.key)
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			r.wrong("rmw %d: not found", id)
			return nil
		}
		return err
	}
	if !CheckValue(w.buf, id) {
		r.wrong("rmw %d: value belongs to another key", id)
	}
	w.version++
	w.val = Value(w.val, id, w.version, w.valueSize())
	if err := r.db.Put(w.key, w.val); err != nil {
		return err
	}
	w.hists[opRMW].record(time.Since(t))
	r.done.Add(1)
	return nil
}

func (w *worker) scan() error {
	r := w.r
	t := time.Now()
	var n int64
	err := r.db.ForEach(func(k, v []byte) error {
		n++
		return nil
	})
	if err != nil {
		return err
	}
	w.hists[opScan].record(time.Since(t))
	r.done.Add(n)
	return nil
}

func (r *runner) wrong(format string, args ...any) {
	if r.errs.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, "marlin bench: wrong result: "+format+"\n", args...)
	}
	r.rep.Errors = r.errs.Load()
}

// measure fills the memory and disk figures.
func (r *runner) measure(rss0 int64) error {
	st, err := r.db.Stats()
	if err != nil {
		return err
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rep := r.rep
	rep.Errors = r.errs.Load()
	rep.KeysInDB = st.Keys
	rep.RSSAnon = RSSAnon()
	rep.RSSAnonUsed = rep.RSSAnon - rss0
	rep.Heap = int64(ms.HeapAlloc)
	rep.IndexBytes = st.Index.ResidentBytes
	rep.DiskBytes = st.DiskBytes
	if st.Keys > 0 {
		rep.RAMPerKey = float64(rep.RSSAnonUsed) / float64(st.Keys)
		rep.DiskPerKey = float64(st.DiskBytes) / float64(st.Keys)
	}
	rep.WriteAmp = st.WriteAmplification()
	return nil
}
