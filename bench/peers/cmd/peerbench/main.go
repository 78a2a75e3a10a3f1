// Command peerbench runs Marlin's load-test workload against Marlin and its
// peers (Pebble, Badger, bbolt, a plain Go map) and prints one markdown
// table with a row per engine:
//
//	cd bench/peers && go run ./cmd/peerbench -keys 10000000 -value-size 8
//
// Each engine runs in a child process of its own (peerbench -child ENGINE),
// so its memory figures are its alone. By default each child is this
// command built with only that engine linked in (go build -tags
// peer_ENGINE), so a peer that fails to build, crashes or times out becomes
// a row with its error instead of stopping the table. With -children self
// (for a binary built with -tags peer_all) it re-executes itself instead.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/bench/peers"
)

const defaultPkg = "github.com/marlinkv/marlin/bench/peers/cmd/peerbench"

type options struct {
	engines  string
	cfg      peers.Config
	dir      string
	timeout  time.Duration
	jsonOut  string
	children string
	pkg      string
	child    string
	out      string
	profile  string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.engines, "engines", strings.Join(peers.All, ","), "engines to run, in table order")
	fs.Uint64Var(&o.cfg.Keys, "keys", 10_000_000, "records to load")
	fs.IntVar(&o.cfg.KeySize, "key-size", 16, "key size in bytes")
	fs.IntVar(&o.cfg.ValueSize, "value-size", 8, "value size in bytes")
	fs.IntVar(&o.cfg.Batch, "batch", 1000, "records per batch in the load")
	fs.Int64Var(&o.cfg.Gets, "gets", 4_000_000, "random gets of present keys, and as many of absent keys")
	fs.IntVar(&o.cfg.Goroutines, "goroutines", 2, "reading goroutines")
	fs.Uint64Var(&o.cfg.Seed, "seed", 1, "random seed")
	fs.StringVar(&o.dir, "dir", "", "where to create the temporary data directories (default: the system temp dir)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Hour, "limit per engine (build and run)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.children, "children", "build", "how to get each child: build (go build -tags peer_ENGINE) or self (re-execute this binary)")
	fs.StringVar(&o.pkg, "pkg", defaultPkg, "package to build the children from")
	fs.StringVar(&o.profile, "cpuprofile", "", "write each engine's CPU profile to DIR/ENGINE.cpu.prof (a child: to this file)")
	fs.StringVar(&o.child, "child", "", "internal: run ENGINE in this process")
	fs.StringVar(&o.out, "out", "", "internal: the child's result file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "peerbench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.child != "" {
		return runChild(o, stderr)
	}
	return runParent(o, args, stdout, stderr)
}

// runChild runs one engine in this process and writes its result file.
func runChild(o options, stderr io.Writer) int {
	e, ok := peers.Lookup(o.child)
	var res *peers.Result
	var err error
	if !ok {
		res = &peers.Result{Engine: o.child}
		err = fmt.Errorf("engine %q is not built into this binary (built in: %s; build with -tags peer_%s or peer_all)",
			o.child, strings.Join(peers.BuiltIn(), ", "), o.child)
	} else {
		if o.profile != "" {
			f, err := os.Create(o.profile)
			if err != nil {
				fmt.Fprintf(stderr, "peerbench: %v\n", err)
				return 1
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintf(stderr, "peerbench: %v\n", err)
				return 1
			}
			defer pprof.StopCPUProfile()
		}
		o.cfg.Progress, o.cfg.Dir = stderr, o.dir
		if o.dir == "" {
			err = errors.New("-child needs -dir")
		} else {
			res, err = peers.Run(e, o.cfg)
		}
	}
	if err != nil {
		res.Error = err.Error()
	}
	data, jerr := json.Marshal(res)
	if jerr == nil && o.out != "" {
		jerr = os.WriteFile(o.out, data, 0o644)
	}
	if jerr != nil {
		fmt.Fprintf(stderr, "peerbench: %v\n", jerr)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "peerbench -child %s: %v\n", o.child, err)
		return 1
	}
	return 0
}

func runParent(o options, args []string, stdout, stderr io.Writer) int {
	names := strings.Split(o.engines, ",")
	for _, n := range names {
		if !peers.Known(n) {
			fmt.Fprintf(stderr, "peerbench: unknown engine %q (known: %s)\n", n, strings.Join(peers.All, ", "))
			return 2
		}
	}
	if o.children != "build" && o.children != "self" {
		fmt.Fprintf(stderr, "peerbench: -children must be build or self\n")
		return 2
	}
	tmp, err := os.MkdirTemp(o.dir, "peerbench-")
	if err != nil {
		fmt.Fprintf(stderr, "peerbench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var results []*peers.Result
	for _, name := range names {
		res := runEngine(ctx, o, name, tmp, stderr)
		if res.Error != "" {
			fmt.Fprintf(stderr, "peerbench: %s failed: %s\n", name, res.Error)
		} else {
			fmt.Fprintf(stderr, "peerbench: %s done: %s puts/s, %s gets/s, %s misses/s, RssAnon %s\n", name,
				humanize.Comma(int64(res.PutsPerSec)), humanize.Comma(int64(res.GetsPerSec)),
				humanize.Comma(int64(res.MissPerSec)), humanize.IBytes(uint64(max(res.RSSAnon, 0))))
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	h := peers.Header{Config: o.cfg, Command: "peerbench " + strings.Join(args, " "), Machine: machine()}
	peers.WriteTable(stdout, h, results)
	if o.jsonOut != "" {
		data, err := json.MarshalIndent(map[string]any{"command": h.Command, "machine": h.Machine, "results": results}, "", "  ")
		if err == nil {
			err = os.WriteFile(o.jsonOut, data, 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "peerbench: %v\n", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		return 1
	}
	return 0
}

// runEngine builds (or picks) the child binary for name and runs it; every
// failure comes back as a result with Error set.
func runEngine(ctx context.Context, o options, name, tmp string, stderr io.Writer) *peers.Result {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	fail := func(format string, args ...any) *peers.Result {
		return &peers.Result{Engine: name, Error: fmt.Sprintf(format, args...)}
	}
	bin, err := os.Executable()
	if err != nil {
		return fail("%v", err)
	}
	if o.children == "build" {
		bin = filepath.Join(tmp, "peerbench-"+name)
		fmt.Fprintf(stderr, "peerbench: building %s (go build -tags peer_%s)\n", name, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", "peer_"+name, "-o", bin, o.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail("build: %v: %s", err, lastLines(out, 5))
		}
	}
	dataDir := filepath.Join(tmp, "data-"+name)
	defer os.RemoveAll(dataDir)
	outFile := filepath.Join(tmp, name+".json")
	c := o.cfg
	cmd := exec.CommandContext(ctx, bin, "-child", name, "-out", outFile, "-dir", dataDir,
		"-keys", strconv.FormatUint(c.Keys, 10), "-key-size", strconv.Itoa(c.KeySize),
		"-value-size", strconv.Itoa(c.ValueSize), "-batch", strconv.Itoa(c.Batch),
		"-gets", strconv.FormatInt(c.Gets, 10), "-goroutines", strconv.Itoa(c.Goroutines),
		"-seed", strconv.FormatUint(c.Seed, 10))
	if o.profile != "" {
		cmd.Args = append(cmd.Args, "-cpuprofile", filepath.Join(o.profile, name+".cpu.prof"))
	}
	tail := &tailWriter{w: stderr}
	cmd.Stdout, cmd.Stderr = tail, tail
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	var res peers.Result
	data, readErr := os.ReadFile(outFile)
	if readErr == nil {
		readErr = json.Unmarshal(data, &res)
	}
	switch {
	case readErr != nil && runErr != nil:
		why := runErr.Error()
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			why = fmt.Sprintf("killed after the -timeout of %s", o.timeout)
		case ctx.Err() != nil:
			why = "interrupted"
		}
		return fail("%s: %s", why, tail.last(3))
	case readErr != nil:
		return fail("no result: %v", readErr)
	case runErr != nil && res.Error == "":
		res.Error = fmt.Sprintf("%v: %s", runErr, tail.last(3))
	}
	res.Engine = name
	return &res
}

// tailWriter forwards to w and keeps the last few KiB.
type tailWriter struct {
	w   io.Writer
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8<<10 {
		t.buf = t.buf[len(t.buf)-4<<10:]
	}
	t.mu.Unlock()
	return t.w.Write(p)
}

func (t *tailWriter) last(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastLines(t.buf, n)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(bytes.ToValidUTF8(b, nil))), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

// machine describes the host for the table's caption.
func machine() string {
	s := fmt.Sprintf("%s %s/%s, %d CPUs", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				s += ", " + humanize.IBytes(kb<<10) + " RAM"
			}
		}
	}
	return s
}
