package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/bench"
	"github.com/marlinkv/marlin/engine"
)

// runScale is marlin scale (make bench-billion): the large-scale run at
// one or more sizes, one after another, each in a temp dir removed
// afterwards; then one table with a column per size.
func runScale(args []string, stdout, stderr io.Writer) error {
	def := bench.DefaultScaleConfig()
	fs := newFlagSet("scale", "[flags]",
		"marlin scale --keys 10000000,100000000,1000000000", stderr)
	var (
		c       = def
		keys    = fs.String("keys", "1000000000", "comma-separated sizes to run, smallest first (1e7 style allowed)")
		noDrop  = fs.Bool("no-drop-cache", false, "do not drop the page cache before the cold phases")
		jsonOut = fs.Bool("json", false, "print the reports as JSON instead of the table")
		quiet   = fs.Bool("quiet", false, "no progress lines")
		rmode   = fs.String("read-mode", "auto", "how reads reach segment files: auto, mmap, pread (engine.Options.ReadMode)")
	)
	fs.StringVar(&c.Dir, "dir", "", "parent directory of the data directories (default: the system temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the data directories")
	fs.StringVar(&c.Reuse, "reuse", "", "run the phases after the load on this directory, kept by an earlier run with --keep of the same --keys (one size only)")
	fs.IntVar(&c.KeySize, "key-size", def.KeySize, "key size in bytes")
	fs.IntVar(&c.ValueSize, "value-size", def.ValueSize, "value size in bytes")
	fs.StringVar(&c.Load, "load", def.Load, "load path: bulk (engine.BulkLoad, as marlin load --bulk) or batch (batched puts into the open database)")
	fs.IntVar(&c.BatchSize, "batch", def.BatchSize, "puts per batch in the load and insert phases")
	fs.IntVar(&c.LoadGoroutines, "load-goroutines", def.LoadGoroutines, "goroutines of the load and insert phases")
	fs.Uint64Var(&c.Inserts, "inserts", 0, "batched puts of new keys after the restart (0: keys/20 within 10^6..2*10^7)")
	fs.IntVar(&c.ReadGoroutines, "goroutines", def.ReadGoroutines, "goroutines of the cold get and update phases")
	fs.IntVar(&c.HotGoroutines, "hot-goroutines", def.HotGoroutines, "goroutines of the hot zipfian phase")
	fs.DurationVar(&c.PhaseTime, "phase-time", def.PhaseTime, "length of each timed phase")
	fs.IntVar(&c.ColdProcs, "cold-procs", def.ColdProcs, "GOMAXPROCS during the cold phases, so that dozens of preads reach the disk at once (0: unchanged)")
	fs.BoolVar(&c.Scan, "scan", false, "also time a full scan with a cold cache")
	fs.Uint64Var(&c.Seed, "seed", def.Seed, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sizes, err := parseSizes(*keys)
	if err != nil {
		return err
	}
	if c.Reuse != "" && len(sizes) != 1 {
		return errors.New("--reuse takes one size in --keys")
	}
	c.DropCache = !*noDrop
	if c.ReadMode, err = engine.ParseReadMode(*rmode); err != nil {
		return err
	}
	if !*quiet {
		c.Progress = stderr
		c.Terminal = isTerminal(stderr)
	}
	var reps []*bench.ScaleReport
	var firstErr error
	for _, n := range sizes {
		c.Keys = n
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "== %s keys\n", humanize.Comma(int64(n)))
		}
		rep, err := bench.RunScale(c)
		if rep != nil {
			reps = append(reps, rep)
		}
		if err != nil {
			firstErr = fmt.Errorf("%s keys: %w", humanize.Comma(int64(n)), err)
			break // a larger size would fail the same way, later
		}
	}
	if *jsonOut {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(reps); err != nil && firstErr == nil {
			firstErr = err
		}
		return firstErr
	}
	if len(reps) > 0 {
		r := reps[0]
		fmt.Fprintf(stdout, "marlin scale: keys of %d bytes, values of %d bytes, sync none, read mode %s, %s %s/%s, %d CPUs, GOMAXPROCS %d\n\n",
			r.KeySize, r.ValueSize, r.ReadMode, r.Env.GoVersion, r.Env.OS, r.Env.Arch, r.Env.CPUs, r.Env.GOMAXPROCS)
		bench.ScaleTable(stdout, reps)
	}
	return firstErr
}

// parseSizes parses "10000000,1e8" into key counts.
func parseSizes(s string) ([]uint64, error) {
	var out []uint64
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			x, ferr := strconv.ParseFloat(f, 64)
			if ferr != nil || x < 1 || x > 1e12 || x != float64(uint64(x)) {
				return nil, fmt.Errorf("--keys: bad size %q", f)
			}
			n = uint64(x)
		}
		if n == 0 {
			return nil, errors.New("--keys: sizes must be positive")
		}
		out = append(out, n)
	}
	return out, nil
}
