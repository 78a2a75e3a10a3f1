package peers

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/bench"
)

// Config is the workload of one child run (the parent passes it as flags,
// the same to every engine).
type Config struct {
	Keys       uint64 // records loaded: ids [0, Keys)
	KeySize    int    // bench.Key sizes
	ValueSize  int    // bench.Value sizes
	Batch      int    // records per batch in the load
	Gets       int64  // random gets of present keys; as many again of absent keys
	Goroutines int    // readers
	Seed       uint64
	Dir        string    // the store's directory (created if needed)
	Progress   io.Writer // progress lines; nil for none
}

// Result is what a child measured; the parent turns it into a table row.
type Result struct {
	Engine     string `json:"engine"`
	Config     string `json:"config"`
	Short      string `json:"config_short"`
	Version    string `json:"version"`
	Keys       uint64 `json:"keys"`
	KeySize    int    `json:"key_size"`
	ValueSize  int    `json:"value_size"`
	Batch      int    `json:"batch"`
	Gets       int64  `json:"gets"`
	Goroutines int    `json:"goroutines"`

	LoadSecs   float64 `json:"load_seconds"`
	SettleSecs float64 `json:"settle_seconds"` // waiting for compactions after the load (Settler)
	PutsPerSec float64 `json:"puts_per_sec"`
	GetsPerSec float64 `json:"gets_per_sec"`
	MissPerSec float64 `json:"miss_gets_per_sec"`

	RSSAnonBefore int64   `json:"rss_anon_before_bytes"` // before Open
	RSSAnonLoaded int64   `json:"rss_anon_loaded_bytes"` // after the load
	RSSAnon       int64   `json:"rss_anon_bytes"`        // after the gets (caches warm)
	RSS           int64   `json:"rss_bytes"`             // VmRSS after the gets, file mappings included
	Heap          int64   `json:"go_heap_bytes"`
	RAMPerKey     float64 `json:"ram_bytes_per_key"`   // (RSSAnon - RSSAnonBefore) / Keys
	DiskAtClose   int64   `json:"disk_bytes_at_close"` // allocated blocks after the first Close
	DiskBytes     int64   `json:"disk_bytes"`          // allocated blocks after a reopen and Close
	DiskPerKey    float64 `json:"disk_bytes_per_key"`  // DiskBytes / Keys

	OpenSecs    float64 `json:"open_seconds"`
	CloseSecs   float64 `json:"close_seconds"`
	RestartSecs float64 `json:"restart_seconds"` // reopen of the closed store

	LoadAvg float64 `json:"load_avg_1m"` // the host's 1-minute load average at the end (other work competes for the CPUs)

	Errors int64    `json:"errors"` // wrong answers
	Wrong  []string `json:"wrong,omitempty"`
	Error  string   `json:"error,omitempty"` // the run failed (set by the parent for crashes)
}

// settleTimeout bounds the wait for a store's background work.
const settleTimeout = 15 * time.Minute

// Run runs the workload against e in this process and measures it.
func Run(e Engine, c Config) (*Result, error) {
	res := &Result{Engine: e.Name, Config: e.Config, Short: e.Short, Version: ModuleVersion(e.Module), Keys: c.Keys,
		KeySize: c.KeySize, ValueSize: c.ValueSize, Batch: c.Batch, Gets: c.Gets, Goroutines: c.Goroutines}
	if c.Batch < 1 || c.Goroutines < 1 || c.Keys == 0 {
		return res, fmt.Errorf("bad config: batch %d, goroutines %d, keys %d", c.Batch, c.Goroutines, c.Keys)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return res, err
	}
	ck := &checker{}
	res.RSSAnonBefore = settledRSSAnon()
	start := time.Now()
	s, err := e.Open(c.Dir)
	if err != nil {
		return res, fmt.Errorf("open: %w", err)
	}
	res.OpenSecs = time.Since(start).Seconds()

	// Load: one goroutine, batches of c.Batch, ids in order (their keys are
	// scrambled, so the stores see random keys).
	var done atomic.Int64
	stop := progress(c.Progress, e.Name+" load", int64(c.Keys), &done)
	start = time.Now()
	err = load(s, c, &done)
	res.LoadSecs = time.Since(start).Seconds()
	stop()
	if err != nil {
		s.Close()
		return res, fmt.Errorf("load: %w", err)
	}
	res.PutsPerSec = float64(c.Keys) / res.LoadSecs
	if st, ok := s.(Settler); ok {
		start = time.Now()
		err := st.Settle(settleTimeout)
		res.SettleSecs = time.Since(start).Seconds()
		if err != nil {
			s.Close()
			return res, fmt.Errorf("settle: %w", err)
		}
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "%s: background work after the load took %.1fs\n", e.Name, res.SettleSecs)
		}
	}
	res.RSSAnonLoaded = settledRSSAnon()

	for _, absent := range []bool{false, true} {
		name := e.Name + " gets"
		if absent {
			name = e.Name + " misses"
		}
		done.Store(0)
		stop := progress(c.Progress, name, c.Gets, &done)
		secs, err := gets(s, c, absent, ck, &done)
		stop()
		if err != nil {
			s.Close()
			return res, fmt.Errorf("%s: %w", name, err)
		}
		if absent {
			res.MissPerSec = float64(c.Gets) / secs
		} else {
			res.GetsPerSec = float64(c.Gets) / secs
		}
	}
	res.RSSAnon = settledRSSAnon()
	res.RSS = vmRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.Heap = int64(ms.HeapAlloc)
	res.RAMPerKey = float64(res.RSSAnon-res.RSSAnonBefore) / float64(c.Keys)

	start = time.Now()
	if err := s.Close(); err != nil {
		return res, fmt.Errorf("close: %w", err)
	}
	res.CloseSecs = time.Since(start).Seconds()
	if res.DiskAtClose, err = DiskUsage(c.Dir); err != nil {
		return res, err
	}
	res.DiskBytes = res.DiskAtClose

	if !e.InMemory {
		start = time.Now()
		s, err = e.Open(c.Dir)
		if err != nil {
			return res, fmt.Errorf("reopen: %w", err)
		}
		res.RestartSecs = time.Since(start).Seconds()
		// The data survived: a sample of the keys reads back.
		rc := c
		rc.Gets = min(c.Gets, 10_000)
		rc.Seed = c.Seed + 1
		if _, err := gets(s, rc, false, ck, &done); err != nil {
			s.Close()
			return res, fmt.Errorf("after reopen: %w", err)
		}
		if err := s.Close(); err != nil {
			return res, fmt.Errorf("close after reopen: %w", err)
		}
		// Files at rest: some stores remove obsolete files (Pebble its
		// preallocated WALs) only at the next open.
		if res.DiskBytes, err = DiskUsage(c.Dir); err != nil {
			return res, err
		}
	}
	res.DiskPerKey = float64(res.DiskBytes) / float64(c.Keys)
	res.LoadAvg = loadAvg()
	res.Errors, res.Wrong = ck.n.Load(), ck.samples
	if res.Errors > 0 {
		return res, fmt.Errorf("%d wrong answers, first: %s", res.Errors, res.Wrong[0])
	}
	return res, nil
}

func load(s Store, c Config, done *atomic.Int64) error {
	keys := make([][]byte, c.Batch)
	vals := make([][]byte, c.Batch)
	for id := uint64(0); id < c.Keys; {
		n := int(min(uint64(c.Batch), c.Keys-id))
		for i := range n {
			keys[i] = bench.Key(keys[i], id+uint64(i), c.KeySize)
			vals[i] = bench.Value(vals[i], id+uint64(i), 0, c.ValueSize)
		}
		if err := s.WriteBatch(keys[:n], vals[:n]); err != nil {
			return err
		}
		id += uint64(n)
		done.Add(int64(n))
	}
	return nil
}

// gets reads c.Gets random keys from c.Goroutines goroutines, present ones
// (ids below Keys) or absent ones, checks every answer and returns the
// elapsed seconds.
func gets(s Store, c Config, absent bool, ck *checker, done *atomic.Int64) (float64, error) {
	var wg sync.WaitGroup
	errs := make(chan error, c.Goroutines)
	start := time.Now()
	for g := range c.Goroutines {
		n := c.Gets * int64(g+1) / int64(c.Goroutines)
		n -= c.Gets * int64(g) / int64(c.Goroutines)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(c.Seed, uint64(g)+1))
			var key, v []byte
			for i := range n {
				id := r.Uint64N(c.Keys)
				if absent {
					id += c.Keys
				}
				key = bench.Key(key, id, c.KeySize)
				var ok bool
				var err error
				v, ok, err = s.Get(v[:0], key)
				if err != nil {
					errs <- fmt.Errorf("get %d: %w", id, err)
					return
				}
				switch {
				case absent && ok:
					ck.wrong("id %d: absent key found", id)
				case !absent && !ok:
					ck.wrong("id %d: not found", id)
				case !absent && !bench.CheckValue(v, id):
					ck.wrong("id %d: wrong value", id)
				case !absent && len(v) != c.ValueSize:
					ck.wrong("id %d: value of %d bytes, want %d", id, len(v), c.ValueSize)
				}
				if i%1024 == 1023 {
					done.Add(1024)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	close(errs)
	return secs, <-errs
}

type checker struct {
	n       atomic.Int64
	mu      sync.Mutex
	samples []string
}

func (c *checker) wrong(format string, args ...any) {
	if c.n.Add(1) <= 10 {
		c.mu.Lock()
		c.samples = append(c.samples, fmt.Sprintf(format, args...))
		c.mu.Unlock()
	}
}

// progress prints name's progress every 5 seconds until the returned
// function is called.
func progress(w io.Writer, name string, total int64, done *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		start, last, lastN := time.Now(), time.Now(), int64(0)
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				n := done.Load()
				fmt.Fprintf(w, "%s: %s of %s (%.0f%%), %s/s, %s elapsed\n", name, humanize.Comma(n),
					humanize.Comma(total), 100*float64(n)/float64(total),
					humanize.Comma(int64(float64(n-lastN)/now.Sub(last).Seconds())), now.Sub(start).Round(time.Second))
				last, lastN = now, n
			}
		}
	}()
	return func() { close(quit); <-finished }
}

func settledRSSAnon() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return bench.RSSAnon()
}

// vmRSS returns the process's resident memory, file mappings included.
func vmRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// loadAvg returns the 1-minute load average (0 where unknown).
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	x, _ := strconv.ParseFloat(f[0], 64)
	return x
}

// DiskUsage returns the bytes allocated to the files under dir (as du
// counts them: sparse or preallocated files count for what they occupy).
func DiskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// ModuleVersion returns the version of module mod built into this binary
// ("std" for the standard library, "local" for a replaced module).
func ModuleVersion(mod string) string {
	if mod == "std" {
		return runtime.Version()
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == mod {
			if d.Replace != nil {
				return "local (" + d.Replace.Path + ")"
			}
			return d.Version
		}
	}
	if bi.Main.Path == mod {
		return "local"
	}
	return "unknown"
}
