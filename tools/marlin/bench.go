package main

import (
	"fmt"
	"io"
	"os"

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
		workload = fs.String("workload", def.Workload, "workload: load, a, b, c, d, f, miss, iterate, mixed")
		dist     = fs.String("dist", def.Dist, "key distribution: uniform, zipfian, scrambled, latest")
		mix      = fs.String("mix", "90:9:1", "get:put:delete weights for --workload mixed")
		vsize    = fs.Int("value-size", def.ValueMin, "value size in bytes (with --value-max: the minimum)")
		vmax     = fs.Int("value-max", 0, "largest value size; values are uniform in [value-size, value-max]")
		sync     = fs.String("sync", def.Sync.String(), "durability mode: group, always, periodic, none")
		jsonOut  = fs.Bool("json", false, "print the report as JSON")
		quiet    = fs.Bool("quiet", false, "no progress lines")
	)
	fs.Int64Var(&c.Ops, "ops", 0, "operations in the run phase (0: run for --duration)")
	fs.DurationVar(&c.Duration, "duration", def.Duration, "length of the run phase when --ops is 0")
	fs.IntVar(&c.Goroutines, "goroutines", def.Goroutines, "concurrent clients")
	fs.IntVar(&c.BatchSize, "batch", def.BatchSize, "puts per batch in the load phase (1: single puts)")
	fs.IntVar(&c.KeySize, "key-size", def.KeySize, "key size in bytes (at least 8)")
	fs.Int64Var(&c.Segment, "segment-size", 0, "segment size in bytes (0: engine default)")
	fs.StringVar(&c.Dir, "dir", "", "data directory (default: a new temp dir, removed afterwards)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the data directory")
	fs.Uint64Var(&c.Seed, "seed", def.Seed, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Keys, c.Workload, c.Dist = *keys, *workload, *dist
	c.ValueMin, c.ValueMax = *vsize, max(*vmax, *vsize)
	var err error
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
	}
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
