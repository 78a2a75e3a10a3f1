package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/bench"
	"github.com/marlinkv/marlin/engine"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	def := bench.DefaultConfig()
	fs := newFlagSet("bench", "[flags]",
		"marlin bench --keys 10000000 --workload c --dist scrambled --duration 30s", stderr)
	var (
		c        = def
		keys     = fs.Uint64("keys", def.Keys, "records to load before the run phase")
		workload = fs.String("workload", def.Workload, "workload: "+workloadNames())
		dist     = fs.String("dist", def.Dist, "key distribution: uniform, zipfian, scrambled (zipfian, hot keys spread), latest")
		mix      = fs.String("mix", def.Mix.String(), "get:put:delete weights for --workload mixed")
		kmax     = fs.Int("key-max", 0, "largest key size; key sizes are uniform in [key-size, key-max] (0: fixed)")
		vmax     = fs.Int("value-max", 0, "largest value size; value sizes are uniform in [value-size, value-max] (0: fixed)")
		sync     = fs.String("sync", def.Sync.String(), "durability mode: group, always, periodic, none")
		jsonOut  = fs.Bool("json", false, "print the report as JSON")
		quiet    = fs.Bool("quiet", false, "no progress lines")
		htmlOut  = fs.String("report", "", "also write the report as a self-contained HTML page to this file: rate over time and latency percentiles as charts (no script, no network)")
	)
	fs.Int64Var(&c.Ops, "ops", 0, "operations in the run phase (iterate: full scans; 0: run for --duration)")
	fs.DurationVar(&c.Duration, "duration", def.Duration, "length of the run phase when --ops is 0")
	fs.IntVar(&c.Goroutines, "goroutines", def.Goroutines, "concurrent clients")
	fs.IntVar(&c.BatchSize, "batch", def.BatchSize, "puts per batch in the load phase (1: single puts)")
	fs.IntVar(&c.KeyMin, "key-size", def.KeyMin, "key size in bytes (at least 8; with --key-max: the smallest)")
	fs.IntVar(&c.ValueMin, "value-size", def.ValueMin, "value size in bytes (with --value-max: the smallest)")
	fs.Int64Var(&c.Segment, "segment-size", 0, "segment size in bytes (0: engine default)")
	fs.StringVar(&c.Dir, "dir", "", "data directory (default: a new temp dir, removed afterwards unless --keep)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the data directory")
	fs.BoolVar(&c.ReuseDir, "reuse-dir", false, "write into a --dir that is not empty (refused otherwise: its data makes answers wrong)")
	fs.Uint64Var(&c.Seed, "seed", def.Seed, "random seed (same seed, same operations)")
	fs.BoolVar(&c.Verify, "verify", false, "after the restart, read every record back and check it")
	ff := benchFillFlags(fs)
	sf := benchSpikeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *workload {
	case "fill":
		c.Keys = *keys
		return runBenchFill(fs, ff, c, *sync, *jsonOut, *quiet, stdout, stderr)
	case "expire", "evict":
		c.Keys = *keys
		return runBenchSpike(fs, sf, *ff.rate, *workload, c, *sync, *jsonOut, *quiet, stdout, stderr)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Keys, c.Workload, c.Dist = *keys, *workload, *dist
	var err error
	if c.KeyMax, err = sizeMax("key", c.KeyMin, *kmax); err != nil {
		return err
	}
	if c.ValueMax, err = sizeMax("value", c.ValueMin, *vmax); err != nil {
		return err
	}
	if c.Mix, err = bench.ParseMix(*mix); err != nil {
		return err
	}
	if c.Sync, err = engine.ParseSyncMode(*sync); err != nil {
		return err
	}
	if !*quiet {
		c.Progress = stderr
		c.Terminal = isTerminal(stderr)
	}
	rep, err := bench.Run(c)
	if rep != nil {
		if *jsonOut {
			if jerr := rep.WriteJSON(stdout); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			rep.WriteText(stdout)
		}
		if *htmlOut != "" {
			if herr := writeHTMLReport(*htmlOut, rep); herr != nil && err == nil {
				err = herr
			}
		}
	}
	return err
}

// writeHTMLReport writes rep's HTML page to path (whole or not at all:
// a temporary file renamed).
func writeHTMLReport(path string, rep *bench.Report) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	err = bench.WriteHTML(f, rep)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--report: %w", err)
	}
	return nil
}

// sizeMax returns the top of a size range given its bottom and the --*-max
// flag (0: a fixed size).
func sizeMax(what string, lo, hi int) (int, error) {
	switch {
	case hi == 0:
		return lo, nil
	case hi < lo:
		return 0, fmt.Errorf("--%s-max %d is below --%s-size %d", what, hi, what, lo)
	}
	return hi, nil
}

func workloadNames() string {
	s := ""
	for i, w := range bench.Workloads {
		if i > 0 {
			s += ", "
		}
		s += w.Name
	}
	return s
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminalFile(f)
}

func isTerminalFile(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// fillBenchFlags are the flags of --workload fill only.
type fillBenchFlags struct {
	rate, workers, queue *int
	latency              *time.Duration
	theta                *float64
	svg                  *string
}

func benchFillFlags(fs *flag.FlagSet) fillBenchFlags {
	d := bench.DefaultFillConfig()
	return fillBenchFlags{
		rate:    fs.Int("rate", d.Rate, "--workload fill, expire, evict: gets per second, all goroutines together (open loop; expire and evict default to 50000)"),
		workers: fs.Int("fill-workers", d.Fill.Workers, "--workload fill: loads running at once"),
		queue:   fs.Int("fill-queue", d.Fill.QueueSize, "--workload fill: keys waiting for a worker at most"),
		latency: fs.Duration("load-latency", d.LoadLatency, "--workload fill: time the loader takes per key"),
		theta:   fs.Float64("zipf-theta", d.Theta, "--workload fill: zipfian exponent of the key popularity"),
		svg:     fs.String("svg", "marlin-fill.svg", "--workload fill: write the chart of the run to this file (empty: none)"),
	}
}

// runBenchFill runs --workload fill: the general flags that apply keep
// their meaning; --keys, --duration, --goroutines, --value-size and
// --sync default to the fill scenario's values unless given.
func runBenchFill(fs *flag.FlagSet, ff fillBenchFlags, c bench.Config, syncMode string, jsonOut, quiet bool, stdout, stderr io.Writer) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fc := bench.DefaultFillConfig()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["keys"] {
		fc.Keys = c.Keys
	}
	if set["duration"] {
		fc.Duration = c.Duration
	}
	if set["goroutines"] {
		fc.Clients = c.Goroutines
	}
	if set["value-size"] {
		fc.ValueSize = c.ValueMin
	}
	if set["key-size"] {
		fc.KeySize = c.KeyMin
	}
	if set["sync"] {
		m, err := engine.ParseSyncMode(syncMode)
		if err != nil {
			return err
		}
		fc.Sync = m
	}
	fc.Dir, fc.Keep, fc.Seed = c.Dir, c.Keep, c.Seed
	fc.Rate, fc.LoadLatency, fc.Theta = *ff.rate, *ff.latency, *ff.theta
	fc.Fill.Workers, fc.Fill.QueueSize = *ff.workers, *ff.queue
	if !quiet {
		fc.Progress = stderr
	}
	rep, err := bench.RunFill(fc)
	if err != nil {
		return err
	}
	if jsonOut {
		err = rep.WriteJSON(stdout)
	} else {
		rep.WriteText(stdout)
	}
	if *ff.svg != "" {
		f, ferr := os.Create(*ff.svg)
		if ferr != nil {
			return ferr
		}
		if ferr = rep.WriteSVG(f); ferr == nil {
			ferr = f.Close()
		} else {
			f.Close()
		}
		if ferr != nil {
			return ferr
		}
		fmt.Fprintf(stderr, "chart written to %s\n", *ff.svg)
	}
	return err
}

// spikeBenchFlags are the flags of --workload expire and evict only
// (--rate is shared with fill).
type spikeBenchFlags struct {
	expireAt  *time.Duration
	maxDisk   *string
	writeRate *int
}

func benchSpikeFlags(fs *flag.FlagSet) spikeBenchFlags {
	e, v := bench.DefaultSpikeConfig("expire"), bench.DefaultSpikeConfig("evict")
	return spikeBenchFlags{
		expireAt:  fs.Duration("expire-at", e.ExpireAt, "--workload expire: when the keys' shared TTL runs out, from the run's start"),
		maxDisk:   fs.String("max-disk", humanize.IBytes(uint64(v.MaxDisk)), "--workload evict: the cache-mode limit"),
		writeRate: fs.Int("write-rate", v.WriteRate, "--workload evict: puts of new keys per second during the run"),
	}
}

// runBenchSpike runs --workload expire or evict: --keys, --duration,
// --goroutines, --value-size, --key-size, --rate and --sync default to
// the workload's values unless given.
func runBenchSpike(fs *flag.FlagSet, sf spikeBenchFlags, rate int, workload string, c bench.Config, syncMode string, jsonOut, quiet bool, stdout, stderr io.Writer) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sc := bench.DefaultSpikeConfig(workload)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, apply := range map[string]func(){
		"keys":       func() { sc.Keys = c.Keys },
		"duration":   func() { sc.Duration = c.Duration },
		"goroutines": func() { sc.Clients = c.Goroutines },
		"value-size": func() { sc.ValueSize = c.ValueMin },
		"key-size":   func() { sc.KeySize = c.KeyMin },
		"rate":       func() { sc.Rate = rate },
	} {
		if set[name] {
			apply()
		}
	}
	if set["sync"] {
		m, err := engine.ParseSyncMode(syncMode)
		if err != nil {
			return err
		}
		sc.Sync = m
	}
	n, err := humanize.ParseBytes(*sf.maxDisk)
	if err != nil || n > 1<<62 {
		return fmt.Errorf("--max-disk %q: want a size such as 1GiB", *sf.maxDisk)
	}
	sc.Dir, sc.Keep, sc.Seed = c.Dir, c.Keep, c.Seed
	sc.ExpireAt, sc.MaxDisk, sc.WriteRate = *sf.expireAt, int64(n), *sf.writeRate
	if !quiet {
		sc.Progress = stderr
	}
	rep, err := bench.RunSpike(sc)
	if err != nil {
		return err
	}
	if jsonOut {
		return rep.WriteJSON(stdout)
	}
	rep.WriteText(stdout)
	return nil
}
