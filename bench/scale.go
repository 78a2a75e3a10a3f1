package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// ScaleConfig describes one run of the large-scale benchmark (make
// bench-billion): a load of Keys thin records, a restart, then phases that
// each measure one cost at that size: batched inserts into the loaded
// database, cold uniform gets (page cache dropped), gets of absent keys,
// hot zipfian gets, cold uniform updates and optionally a full scan.
type ScaleConfig struct {
	Dir  string // parent of the data directory; "" means the system temp dir
	Keep bool   // keep the data directory afterwards
	// Reuse, if set, is a data directory kept by an earlier run of the same
	// Keys, KeySize and ValueSize (Keep): the load is skipped, the other
	// phases run on it, and it is kept.
	Reuse     string
	Keys      uint64
	KeySize   int
	ValueSize int
	// Load chooses the load path: "bulk" (engine.BulkLoad into the new
	// directory) or "batch" (batched puts into the open database from
	// LoadGoroutines goroutines).
	Load           string
	BatchSize      int
	LoadGoroutines int
	Inserts        uint64        // batched puts of new keys after the restart; 0: Keys/20 within [10^6, 2*10^7]
	ReadGoroutines int           // goroutines of the cold phases
	HotGoroutines  int           // goroutines of the hot zipfian phase
	PhaseTime      time.Duration // length of each timed phase
	DropCache      bool          // drop the page cache before the cold phases (needs root)
	Scan           bool          // also time a full scan (ForEach) with a cold cache
	ReadMode       engine.ReadMode
	// ColdProcs is GOMAXPROCS during the cold phases (0: unchanged). A
	// goroutine blocked in pread keeps its P until the runtime's monitor
	// takes it back (tens of µs), so with GOMAXPROCS 2 about two dozen
	// thousand reads a second reach the disk however many goroutines
	// read; more Ps than cores keep the disk's queue full
	// (docs/design.md, "Large-data read path").
	ColdProcs int
	Seed      uint64
	Progress  io.Writer
	Terminal  bool
}

// DefaultScaleConfig is make bench-billion's run, at 10^9 keys.
func DefaultScaleConfig() ScaleConfig {
	return ScaleConfig{Keys: 1_000_000_000, KeySize: 16, ValueSize: 8, Load: "bulk", BatchSize: 1000,
		LoadGoroutines: 2, ReadGoroutines: 64, HotGoroutines: 2, PhaseTime: 30 * time.Second,
		DropCache: true, ColdProcs: 16, Seed: 1}
}

func (c *ScaleConfig) normalize() error {
	switch {
	case c.Keys == 0:
		return errors.New("keys must be positive")
	case c.KeySize < 8 || c.KeySize > 250:
		return fmt.Errorf("key size %d: want 8..250", c.KeySize)
	case c.ValueSize < 0 || c.ValueSize > 1<<20:
		return fmt.Errorf("value size %d: want 0..1 MiB", c.ValueSize)
	case c.Load != "batch" && c.Load != "bulk":
		return fmt.Errorf("load %q: want bulk or batch", c.Load)
	case c.BatchSize < 1 || c.LoadGoroutines < 1 || c.ReadGoroutines < 1 || c.HotGoroutines < 1:
		return errors.New("batch size and goroutine counts must be positive")
	case c.PhaseTime <= 0:
		return errors.New("phase time must be positive")
	case c.ColdProcs < 0:
		return errors.New("cold procs must not be negative")
	}
	if c.Inserts == 0 {
		c.Inserts = min(max(c.Keys/20, 1_000_000), 20_000_000)
	}
	return nil
}

// ScalePhase is what one phase measured. Disk figures are the device's
// counters (every process's I/O on it) and the process's own read bytes.
type ScalePhase struct {
	Name          string  `json:"name"`            // the phase (load, restart, cold get, ...)
	Ops           int64   `json:"ops"`             // operations done
	Seconds       float64 `json:"seconds"`         // how long the phase took
	OpsPerSec     float64 `json:"ops_per_sec"`     // Ops over Seconds
	Latency       Latency `json:"latency"`         // of each operation
	DiskReads     int64   `json:"disk_reads"`      // reads the device completed
	DiskReadBytes int64   `json:"disk_read_bytes"` // bytes the device read
	ProcReadBytes int64   `json:"proc_read_bytes"` // bytes this process read from storage
	WrittenBytes  int64   `json:"written_bytes"`   // bytes this process wrote to storage
	Cold          bool    `json:"cold"`            // the page cache was dropped first
	GOMAXPROCS    int     `json:"gomaxprocs"`      // during the phase
	Preads        int64   `json:"preads"`          // records read with pread (engine Stats.PreadReads)
	// DiskQueue is the device's mean number of requests in flight over
	// the phase, and DiskReadMs the mean time of one of its reads: when
	// the queue stays near the goroutines' number, the disk, not the
	// engine, sets the rate.
	// SideOps is the reference operations a mixed phase ran beside Ops
	// (the cold gets beside raw disk reads).
	SideOps    int64   `json:"side_ops,omitempty"`
	DiskQueue  float64 `json:"disk_queue"`
	DiskReadMs float64 `json:"disk_read_ms"`
}

// ReadsPerOp returns the device reads per operation.
func (p *ScalePhase) ReadsPerOp() float64 { return ratio(p.DiskReads, p.Ops) }

// BytesPerOp returns the bytes the device read per operation.
func (p *ScalePhase) BytesPerOp() float64 { return ratio(p.DiskReadBytes, p.Ops) }

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// ScaleReport is one size's results. It is filled as far as the run got:
// a failed run reports what it measured before the failure (Err).
type ScaleReport struct {
	Keys         uint64       `json:"keys"`           // records loaded
	KeySize      int          `json:"key_size"`       // bytes per key
	ValueSize    int          `json:"value_size"`     // bytes per value
	Load         string       `json:"load"`           // the load path: bulk or batch
	ReadMode     string       `json:"read_mode"`      // the engine's read mode in the cold phases
	Goroutines   int          `json:"goroutines"`     // of the cold phases
	HotGoroutine int          `json:"hot_goroutines"` // of the hot phase
	Env          Env          `json:"env"`
	Phases       []ScalePhase `json:"phases"`
	KeysLoaded   int64        `json:"keys_loaded"`
	KeysInDB     int64        `json:"keys_in_db"`
	PeakRSSAnon  int64        `json:"peak_rss_anon_bytes"` // sampled every second over the whole run
	PeakHeap     int64        `json:"peak_go_heap_bytes"`
	BaseRSSAnon  int64        `json:"base_rss_anon_bytes"` // before Open
	IndexBytes   int64        `json:"index_bytes"`
	LogBytes     int64        `json:"log_bytes"`     // segment bytes after the load
	DirBytes     int64        `json:"dir_bytes"`     // the whole directory after the load and close
	LoadWritten  int64        `json:"load_written"`  // bytes written by the load, its snapshots and close
	CloseSecs    float64      `json:"close_seconds"` // the Close after the load
	RestartSecs  float64      `json:"restart_seconds"`
	FromSnapshot bool         `json:"restart_from_snapshot"`
	Replayed     int64        `json:"restart_records_replayed"`
	CacheDropped bool         `json:"cache_dropped"`
	Wrong        int64        `json:"wrong_results"`
	Err          string       `json:"error,omitempty"`
}

// Phase returns the phase called name, or nil.
func (rep *ScaleReport) Phase(name string) *ScalePhase {
	for i := range rep.Phases {
		if rep.Phases[i].Name == name {
			return &rep.Phases[i]
		}
	}
	return nil
}

// WriteAmp returns the bytes the load wrote per byte of log it left.
func (rep *ScaleReport) WriteAmp() float64 { return ratio(rep.LoadWritten, rep.LogBytes) }

// scale is one run's state.
type scale struct {
	cfg     ScaleConfig
	rep     *ScaleReport
	dir     string
	db      *engine.DB
	disk    func() DiskCounters
	workers []*scaleWorker // the current phase's
	wrong   atomic.Int64
	peakRSS atomic.Int64
	peakHp  atomic.Int64
	stage   atomic.Pointer[string] // where a long phase is, for the progress line
}

// RunScale runs the large-scale benchmark at one size. It returns the
// report even when it also returns an error.
func RunScale(cfg ScaleConfig) (*ScaleReport, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	rep := &ScaleReport{Keys: cfg.Keys, KeySize: cfg.KeySize, ValueSize: cfg.ValueSize, Load: cfg.Load,
		Goroutines: cfg.ReadGoroutines, HotGoroutine: cfg.HotGoroutines, ReadMode: cfg.ReadMode.String(),
		Env: Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0)}}
	dir := cfg.Reuse
	if dir == "" {
		d, err := os.MkdirTemp(cfg.Dir, "marlin-scale-")
		if err != nil {
			return rep, err
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	s := &scale{cfg: cfg, rep: rep, dir: dir, disk: DiskOf(dir)}
	rep.BaseRSSAnon = settledRSSAnon()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.sample(stop) })
	err := s.run()
	close(stop)
	wg.Wait()
	if s.db != nil {
		if st, serr := s.db.Stats(); serr == nil {
			rep.KeysInDB = st.Keys
		}
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	}
	rep.PeakRSSAnon, rep.PeakHeap = s.peakRSS.Load(), s.peakHp.Load()
	rep.Wrong = s.wrong.Load()
	if err == nil && rep.Wrong > 0 {
		err = fmt.Errorf("%d operations returned wrong results", rep.Wrong)
	}
	if err != nil {
		rep.Err = err.Error()
	}
	return rep, err
}

func (s *scale) options() *engine.Options {
	return &engine.Options{Sync: engine.SyncNone, ReadMode: s.cfg.ReadMode,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func (s *scale) run() error {
	c := s.cfg
	if c.Reuse == "" {
		if err := s.load(); err != nil {
			return err
		}
	} else {
		s.note("reusing %s: no load", c.Reuse)
	}
	// Restart: the time to open the loaded database.
	t := time.Now()
	db, err := engine.Open(s.dir, s.options())
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	s.db = db
	s.rep.RestartSecs = time.Since(t).Seconds()
	st, err := db.Stats()
	if err != nil {
		return err
	}
	s.rep.FromSnapshot, s.rep.Replayed = st.OpenedFromSnapshot, st.RecordsReplayed
	s.rep.IndexBytes = st.Index.ResidentBytes
	// A reused directory may hold the inserts of the run that kept it.
	if st.Keys != int64(c.Keys) && (c.Reuse == "" || st.Keys != int64(c.Keys+c.Inserts)) {
		s.wrongf("after the restart: %d keys, want %d", st.Keys, c.Keys)
	}

	n := c.Keys
	if err := s.timed("insert", false, c.LoadGoroutines, 0, int64(c.Inserts), func(w *scaleWorker) error {
		return s.insertRange(w, n+c.Inserts*uint64(w.id)/uint64(c.LoadGoroutines),
			n+c.Inserts*uint64(w.id+1)/uint64(c.LoadGoroutines))
	}); err != nil {
		return err
	}
	total := n + c.Inserts
	// The disk's own rate, alone and then beside cold gets (half the
	// goroutines each, the same disk at the same moment: a throttled
	// disk's windows cannot tell them apart).
	if rd, err := openRawDisk(s.dir); err != nil {
		s.note("raw disk phases skipped: %v", err)
	} else {
		err := s.timed("raw disk", true, c.ReadGoroutines, c.PhaseTime/2, 0, rd.read)
		if err == nil {
			err = s.timed("cold get beside raw reads", true, c.ReadGoroutines, c.PhaseTime/2, 0, func(w *scaleWorker) error {
				if w.id%2 == 0 {
					w.side.Add(1)
					return rd.read(w)
				}
				return s.get(w, w.rnd.Uint64N(total), true)
			})
		}
		rd.close()
		if err != nil {
			s.note("raw disk phases: %v", err) // the filesystem may refuse O_DIRECT
		}
	}
	if err := s.timed("cold get", true, c.ReadGoroutines, c.PhaseTime, 0, func(w *scaleWorker) error {
		return s.get(w, w.rnd.Uint64N(total), true)
	}); err != nil {
		return err
	}
	if err := s.timed("absent get", false, c.ReadGoroutines, c.PhaseTime/3, 0, func(w *scaleWorker) error {
		return s.get(w, total+w.rnd.Uint64N(1<<40), false)
	}); err != nil {
		return err
	}
	zipf := NewZipfian(total, ZipfianConstant, true)
	warm := max(c.PhaseTime/3, time.Second)
	if err := s.timed("hot zipfian warm-up", false, c.HotGoroutines, warm, 0, func(w *scaleWorker) error {
		return s.get(w, zipf.Next(w.rnd), true)
	}); err != nil {
		return err
	}
	s.rep.Phases = s.rep.Phases[:len(s.rep.Phases)-1] // the warm-up only fills the page cache
	if err := s.timed("hot zipfian get", false, c.HotGoroutines, c.PhaseTime, 0, func(w *scaleWorker) error {
		return s.get(w, zipf.Next(w.rnd), true)
	}); err != nil {
		return err
	}
	if err := s.timed("cold update", true, c.ReadGoroutines, c.PhaseTime, 0, func(w *scaleWorker) error {
		id := w.rnd.Uint64N(total)
		w.key = Key(w.key, id, c.KeySize)
		w.val = Value(w.val, id, 1+w.rnd.Uint64(), c.ValueSize)
		t := time.Now()
		if err := s.db.Put(w.key, w.val); err != nil {
			return err
		}
		w.hist.Record(time.Since(t))
		return nil
	}); err != nil {
		return err
	}
	if c.Scan {
		return s.scan()
	}
	return nil
}

// load fills a new database with Keys records and closes it, measuring
// the bytes written (log, snapshots and the close).
func (s *scale) load() error {
	c := s.cfg
	io0 := ReadProcIO()
	t := time.Now()
	if c.Load == "bulk" {
		if err := s.bulkLoad(); err != nil {
			return err
		}
	} else {
		db, err := engine.Open(s.dir, s.options())
		if err != nil {
			return err
		}
		s.db = db
		err = s.timed("load", false, c.LoadGoroutines, 0, int64(c.Keys), func(w *scaleWorker) error {
			return s.insertRange(w, c.Keys*uint64(w.id)/uint64(c.LoadGoroutines),
				c.Keys*uint64(w.id+1)/uint64(c.LoadGoroutines))
		})
		if err != nil {
			return err
		}
		st, err := db.Stats()
		if err != nil {
			return err
		}
		s.rep.KeysLoaded, s.rep.LogBytes = st.Keys, st.DiskBytes
		tc := time.Now()
		s.db = nil
		if err := db.Close(); err != nil {
			return fmt.Errorf("close after the load: %w", err)
		}
		s.rep.CloseSecs = time.Since(tc).Seconds()
	}
	s.rep.LoadWritten = ReadProcIO().WriteBytes - io0.WriteBytes
	s.rep.DirBytes = DirBytes(s.dir)
	if p := s.rep.Phase("load"); p != nil {
		p.WrittenBytes = s.rep.LoadWritten
		p.Seconds = time.Since(t).Seconds() // including the close
		p.OpsPerSec = float64(p.Ops) / p.Seconds
	}
	return nil
}

// bulkLoad builds the database with engine.BulkLoad from ids [0, Keys).
func (s *scale) bulkLoad() error {
	c := s.cfg
	return s.timed("load", false, 1, 0, int64(c.Keys), func(w *scaleWorker) error {
		id := uint64(0)
		src := engine.BulkSourceFunc(func() ([]byte, []byte, error) {
			if id == c.Keys {
				return nil, nil, io.EOF
			}
			w.key = Key(w.key, id, c.KeySize)
			w.val = Value(w.val, id, 0, c.ValueSize)
			id++
			if id%1024 == 0 {
				w.done.Add(1024)
			}
			return w.key, w.val, nil
		})
		progress := func(p engine.BulkProgress) {
			stage := p.Phase + " pass"
			if p.Phase == "index" {
				stage = fmt.Sprintf("index pass, %d of %d partitions", p.PartsDone, p.Parts)
			}
			s.stage.Store(&stage)
		}
		st, err := engine.BulkLoad(s.dir, s.options(), src, &engine.BulkOptions{Progress: progress})
		s.stage.Store(nil)
		w.done.Store(int64(id))
		if err != nil {
			return err
		}
		s.rep.KeysLoaded, s.rep.LogBytes = st.Keys, st.LogBytes
		s.note("bulk load: log pass %s, index pass %s, publish %s; spill %s, snapshot %s",
			st.LogPass.Round(time.Millisecond), st.IndexPass.Round(time.Millisecond),
			st.Publish.Round(time.Millisecond), ibytes(st.SpillBytes), ibytes(st.SnapshotBytes))
		return nil
	})
}

// insertRange puts ids [lo, hi) in batches.
func (s *scale) insertRange(w *scaleWorker, lo, hi uint64) error {
	c := s.cfg
	var b engine.Batch
	for id := lo; id < hi; id++ {
		w.key = Key(w.key, id, c.KeySize)
		w.val = Value(w.val, id, 0, c.ValueSize)
		b.Put(w.key, w.val)
		if b.Len() == c.BatchSize || id == hi-1 {
			t := time.Now()
			if err := s.db.Write(&b); err != nil {
				return err
			}
			w.hist.Record(time.Since(t))
			w.done.Add(int64(b.Len()))
			b.Reset()
		}
	}
	return nil
}

// get reads id and checks the answer: present ids must give their value,
// absent ones ErrNotFound.
func (s *scale) get(w *scaleWorker, id uint64, present bool) error {
	w.key = Key(w.key, id, s.cfg.KeySize)
	t := time.Now()
	v, err := s.db.AppendValue(w.val[:0], w.key)
	w.hist.Record(time.Since(t))
	switch {
	case err == nil && present:
		if !CheckValue(v, id) {
			s.wrongf("get %d: wrong value", id)
		}
		w.val = v
	case errors.Is(err, engine.ErrNotFound) && !present:
	case errors.Is(err, engine.ErrNotFound):
		s.wrongf("get %d: not found", id)
	case err == nil:
		s.wrongf("get of absent id %d found a value", id)
	default:
		return err
	}
	return nil
}

// scan times a full ForEach with a cold cache, checking every value.
func (s *scale) scan() error {
	st, err := s.db.Stats()
	if err != nil {
		return err
	}
	return s.timed("scan", true, 1, 0, st.Keys, func(w *scaleWorker) error {
		return s.db.ForEach(func(k, v []byte) error {
			if len(k) < 8 || !CheckValue(v, IDOfKey(k)) {
				s.wrongf("scan: wrong value for key %x", k)
			}
			w.done.Add(1)
			return nil
		})
	})
}

func (s *scale) wrongf(format string, args ...any) {
	if s.wrong.Add(1) <= 5 && s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, "WRONG: "+format+"\n", args...)
	}
}

func ratioF(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
