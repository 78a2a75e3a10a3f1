package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/engine"
)

// scaleWorker is one goroutine of a phase; its fields are its own.
type scaleWorker struct {
	id   int
	rnd  *rand.Rand
	hist *Histogram
	key  []byte
	val  []byte
	raw  []byte // an aligned buffer of the raw disk phase
	_    [64]byte
	done atomic.Int64 // operations completed in this phase
	side atomic.Int64 // of which reference operations (ScalePhase.SideOps)
	_    [56]byte
}

// completed returns the operations the current phase's workers did.
func (s *scale) completed() int64 {
	var n int64
	for _, w := range s.workers {
		n += w.done.Load()
	}
	return n
}

// timed runs one phase on g goroutines. With d > 0 every goroutine calls
// op in a loop until d has passed (one call, one operation); otherwise
// every goroutine calls op once and op counts its own operations in
// w.done (total, if known, is for the progress line). With cold, the page
// cache is dropped first. The phase is appended to the report even when
// it fails.
func (s *scale) timed(name string, cold bool, g int, d time.Duration, total int64, op func(w *scaleWorker) error) error {
	p := ScalePhase{Name: name}
	if cold && g > 1 && s.cfg.ColdProcs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(s.cfg.ColdProcs))
	}
	p.GOMAXPROCS = runtime.GOMAXPROCS(0)
	if cold && s.cfg.DropCache {
		if err := DropPageCache(); err != nil {
			s.note("%s: %v; the phase runs with a warm cache", name, err)
		} else {
			p.Cold = true
			s.rep.CacheDropped = true
		}
	}
	s.workers = make([]*scaleWorker, g)
	for i := range s.workers {
		s.workers[i] = &scaleWorker{id: i, hist: NewHistogram(),
			rnd: rand.New(rand.NewPCG(s.cfg.Seed, uint64(len(s.rep.Phases))<<32|uint64(i)))}
	}
	stop, progDone := make(chan struct{}), make(chan struct{})
	go s.progress(name, total, d, stop, progDone)
	disk0, io0, preads0 := s.disk(), ReadProcIO(), s.preads()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	errs := make([]error, g)
	for i, w := range s.workers {
		wg.Go(func() {
			if d <= 0 {
				errs[i] = op(w)
				return
			}
			for n := 0; n%64 != 0 || time.Now().Before(deadline); n++ {
				if err := op(w); err != nil {
					errs[i] = err
					return
				}
				w.done.Add(1)
			}
		})
	}
	wg.Wait()
	p.Seconds = time.Since(start).Seconds()
	close(stop)
	<-progDone
	disk1, io1 := s.disk(), ReadProcIO()
	p.Ops = s.completed()
	for _, w := range s.workers {
		p.SideOps += w.side.Load()
	}
	p.Ops -= p.SideOps
	p.OpsPerSec = float64(p.Ops) / p.Seconds
	if disk0.OK && disk1.OK {
		p.DiskReads = disk1.Reads - disk0.Reads
		p.DiskReadBytes = (disk1.SectorsRead - disk0.SectorsRead) * 512
		p.DiskQueue = float64(disk1.QueueMillis-disk0.QueueMillis) / (p.Seconds * 1000)
		p.DiskReadMs = ratioF(float64(disk1.ReadMillis-disk0.ReadMillis), float64(p.DiskReads))
	}
	p.ProcReadBytes = io1.ReadBytes - io0.ReadBytes
	p.Preads = s.preads() - preads0
	p.WrittenBytes = io1.WriteBytes - io0.WriteBytes
	hs := make([]*Histogram, len(s.workers))
	for i, w := range s.workers {
		hs[i] = w.hist
	}
	p.Latency, _ = MergeSummaries(hs)
	s.workers = nil
	s.rep.Phases = append(s.rep.Phases, p)
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// preads returns the database's pread count so far (0 without a database).
func (s *scale) preads() int64 {
	if s.db == nil {
		return 0
	}
	st, err := s.db.Stats()
	if err != nil {
		return 0
	}
	return st.PreadReads
}

// sample records the peak RssAnon and Go heap every second until stop
// closes (the figures the issue bounds "at every moment", not only at the
// end).
func (s *scale) sample(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.peak()
		select {
		case <-stop:
			s.peak()
			return
		case <-t.C:
		}
	}
}

func (s *scale) peak() {
	raise(&s.peakRSS, RSSAnon())
	raise(&s.peakHp, heapBytes())
}

func raise(a *atomic.Int64, v int64) {
	for {
		o := a.Load()
		if v <= o || a.CompareAndSwap(o, v) {
			return
		}
	}
}

// heapBytes returns the bytes of live and unswept heap objects, read
// without stopping the world.
func heapBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// progress prints the phase's rate, share done, time left, memory and
// disk until stop closes: a redrawn line on a terminal, else a line every
// 10 seconds.
func (s *scale) progress(name string, total int64, d time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	printProgress(progressSpec{out: s.cfg.Progress, terminal: s.cfg.Terminal, every: 10 * time.Second,
		name: name, total: total, duration: d, completed: s.completed,
		extra: func() string {
			stage := ""
			if p := s.stage.Load(); p != nil {
				stage = ", " + *p
			}
			return fmt.Sprintf("%s, RssAnon %s, heap %s, disk %s", stage, ibytes(RSSAnon()), ibytes(heapBytes()),
				ibytes(DirBytes(s.dir)+DirBytes(engine.BulkStagingDir(s.dir))))
		}}, stop, done)
}

// note prints a remark on the progress stream.
func (s *scale) note(format string, args ...any) {
	if s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, format+"\n", args...)
	}
}

// ScaleTable writes one markdown table with a column per report: the
// figures and the cost per key of each size side by side.
func ScaleTable(w interface{ Write([]byte) (int, error) }, reps []*ScaleReport) {
	row := func(name string, f func(r *ScaleReport) string) {
		fmt.Fprintf(w, "| %s |", name)
		for _, r := range reps {
			fmt.Fprintf(w, " %s |", f(r))
		}
		fmt.Fprintln(w)
	}
	phase := func(r *ScaleReport, name string, f func(p *ScalePhase) string) string {
		if p := r.Phase(name); p != nil && p.Ops > 0 {
			return f(p)
		}
		return "—"
	}
	rate := func(name string) func(r *ScaleReport) string {
		return func(r *ScaleReport) string {
			return phase(r, name, func(p *ScalePhase) string { return humanize.Comma(int64(p.OpsPerSec)) + "/s" })
		}
	}
	perKey := func(n int64, r *ScaleReport) string {
		if r.Keys == 0 {
			return "—"
		}
		return fmt.Sprintf("%s (%.1f B/key)", ibytes(n), float64(n)/float64(r.Keys))
	}
	row("keys", func(r *ScaleReport) string { return humanize.Comma(int64(r.Keys)) })
	fmt.Fprint(w, "|---|")
	for range reps {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	row("load ("+loadNames(reps)+")", func(r *ScaleReport) string {
		return phase(r, "load", func(p *ScalePhase) string {
			return fmt.Sprintf("%s/s, %s", humanize.Comma(int64(p.OpsPerSec)), secs(p.Seconds))
		})
	})
	row("load writes / log", func(r *ScaleReport) string {
		return fmt.Sprintf("%.2fx (%s / %s)", r.WriteAmp(), ibytes(r.LoadWritten), ibytes(r.LogBytes))
	})
	row("peak RssAnon", func(r *ScaleReport) string { return perKey(r.PeakRSSAnon-r.BaseRSSAnon, r) })
	row("index", func(r *ScaleReport) string { return perKey(r.IndexBytes, r) })
	row("peak Go heap", func(r *ScaleReport) string { return ibytes(r.PeakHeap) })
	row("disk after load", func(r *ScaleReport) string { return perKey(r.DirBytes, r) })
	row("restart", func(r *ScaleReport) string {
		how := "log replay"
		if r.FromSnapshot {
			how = "snapshot"
		}
		return fmt.Sprintf("%s (%s)", secs(r.RestartSecs), how)
	})
	row("batched inserts at size", rate("insert"))
	g, hg, procs := 0, 0, ""
	if len(reps) > 0 {
		g, hg = reps[0].Goroutines, reps[0].HotGoroutine
		if p := reps[0].Phase("cold get"); p != nil {
			procs = fmt.Sprintf(", GOMAXPROCS %d", p.GOMAXPROCS)
		}
	}
	row(fmt.Sprintf("cold uniform gets, %d goroutines%s", g, procs), rate("cold get"))
	row("  disk reads / get", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string { return fmt.Sprintf("%.3f", p.ReadsPerOp()) })
	})
	row("  bytes read / get", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string { return humanize.IBytes(uint64(p.BytesPerOp())) })
	})
	row("  disk queue depth, read latency", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string {
			return fmt.Sprintf("%.1f, %.2f ms", p.DiskQueue, p.DiskReadMs)
		})
	})
	row("cold gets beside raw reads, half the goroutines each", func(r *ScaleReport) string {
		return phase(r, "cold get beside raw reads", func(p *ScalePhase) string {
			return fmt.Sprintf("%s gets/s, %s raw reads/s (%.2fx, %.3f disk reads a get)", humanize.Comma(int64(p.OpsPerSec)),
				humanize.Comma(int64(float64(p.SideOps)/p.Seconds)), ratio(p.Ops, p.SideOps),
				ratioF(float64(p.DiskReads-p.SideOps), float64(p.Ops)))
		})
	})
	row("raw disk: random 4 KiB O_DIRECT reads, same goroutines", func(r *ScaleReport) string {
		return phase(r, "raw disk", func(p *ScalePhase) string {
			return fmt.Sprintf("%s/s (queue %.1f, %.2f ms)", humanize.Comma(int64(p.OpsPerSec)), p.DiskQueue, p.DiskReadMs)
		})
	})
	row("  preads / get", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string { return fmt.Sprintf("%.3f", ratio(p.Preads, p.Ops)) })
	})
	row("  p99 latency", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string { return dur(p.Latency.P99) })
	})
	row("  bytes written during the phase", func(r *ScaleReport) string {
		return phase(r, "cold get", func(p *ScalePhase) string { return ibytes(p.WrittenBytes) })
	})
	row("absent gets", rate("absent get"))
	row("  disk reads / absent get", func(r *ScaleReport) string {
		return phase(r, "absent get", func(p *ScalePhase) string { return fmt.Sprintf("%.4f", p.ReadsPerOp()) })
	})
	row(fmt.Sprintf("hot zipfian gets, %d goroutines", hg), rate("hot zipfian get"))
	row(fmt.Sprintf("cold uniform updates, %d goroutines%s", g, procs), rate("cold update"))
	row("full scan (cold)", func(r *ScaleReport) string {
		return phase(r, "scan", func(p *ScalePhase) string {
			return fmt.Sprintf("%s pairs/s, %s", humanize.Comma(int64(p.OpsPerSec)), secs(p.Seconds))
		})
	})
	row("cache dropped for cold phases", func(r *ScaleReport) string { return fmt.Sprint(r.CacheDropped) })
	row("error", func(r *ScaleReport) string {
		if r.Err == "" {
			return "none"
		}
		return r.Err
	})
}

func loadNames(reps []*ScaleReport) string {
	if len(reps) == 0 {
		return ""
	}
	return reps[0].Load
}
