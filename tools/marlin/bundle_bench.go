package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/bundle"
)

// 'marlin bundle bench' (make bench-bundle): at each value size, builds an
// exact bundle of generated pairs in-process and from a tsv dump file
// through 'bundle build', an approximate one, and a Go map of the same
// pairs; then times lookups of present and absent keys from several
// goroutines with the file in the page cache, and counts the entries a
// lookup reads. One markdown table per value size.

const bundleBenchHelp = `Runs the bundle benchmark: for each --value-size, N pairs of 16-byte keys
are built into an exact bundle (from memory, and from a tsv dump file as
'marlin bundle build' reads it), an approximate bundle and a Go map; then
lookups of present and of absent keys run from --goroutines goroutines
with the bundle in the page cache. Prints one table per value size. The
files go to a temporary directory under --dir and are removed at the end
(about 3 × N × (value size + 40) bytes at the peak).

Then (unless --engine=false) a second table: the same lookups in the
engine with the pairs in its log, in the engine over the bundle as its
base with an empty delta and with a delta of 1% of the keys; lookups with
the page cache dropped (as root), counting disk reads; and 8 processes
reading all of the bundle, their summed PSS against 8 private copies.`

type bundleBenchOpts struct {
	keys       int
	lookups    int
	goroutines int
	memory     int64
	dir        string
	engine     bool
	dropCaches bool
	goMap      bool
}

func runBundleBench(args []string, stdout, stderr io.Writer) error {
	if path := os.Getenv(shareChildEnv); path != "" {
		return shareChild(path, os.Stdin, stdout)
	}
	fs := newFlagSet("bundle bench", "[flags]\n\n"+bundleBenchHelp, "marlin bundle bench --keys 10000000 --value-size 8,100", stderr)
	var o bundleBenchOpts
	fs.IntVar(&o.keys, "keys", 1000000, "pairs per bundle")
	sizes := fs.String("value-size", "8,100", "value sizes in bytes, comma-separated: one run each")
	fs.IntVar(&o.lookups, "lookups", 0, "lookups per measurement (0: as many as --keys)")
	fs.IntVar(&o.goroutines, "goroutines", 2, "goroutines doing lookups")
	memory := fs.Int64("memory", bundle.DefaultMemoryLimit, "the builder's memory limit in bytes")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "where the temporary files go")
	fs.BoolVar(&o.dropCaches, "drop-caches", true, "empty the machine's page cache for the cold lookups (as root; it slows everything else running)")
	fs.BoolVar(&o.goMap, "go-map", true, "also a Go map of the pairs (it takes about 90 + value size bytes of RAM per pair)")
	fs.BoolVar(&o.engine, "engine", true, "also the engine beside the bundle, the engine over it as a base, cold lookups and sharing")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if o.keys < 1 || o.goroutines < 1 {
		return errors.New("--keys and --goroutines must be at least 1")
	}
	if o.lookups == 0 {
		o.lookups = o.keys
	}
	o.memory = *memory
	for _, s := range strings.Split(*sizes, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 1 || v > 1<<16 {
			return fmt.Errorf("--value-size: bad size %q", s)
		}
		if err := benchBundleSize(o, v, stdout, stderr); err != nil {
			return err
		}
	}
	return nil
}

// benchKeys holds n generated 16-byte keys back to back: key i is the hex
// of a bijective mix of i (so keys are distinct), and key n+i an absent
// one.
type benchKeys struct {
	b []byte
	n int
}

func newBenchKeys(n int) *benchKeys {
	k := &benchKeys{b: make([]byte, 0, 32*n), n: n}
	for i := range 2 * n {
		k.b = fmt.Appendf(k.b, "%016x", mix64(uint64(i)))
	}
	return k
}

func (k *benchKeys) present(i int) []byte { return k.b[16*i : 16*i+16] }
func (k *benchKeys) absent(i int) []byte  { return k.b[16*(k.n+i) : 16*(k.n+i)+16] }

// mix64 is splitmix64's finalizer: a bijection of uint64.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// benchValue is pair i's value: size printable bytes of a pattern (no tsv
// escaping needed).
func benchValue(pattern []byte, i, size int) []byte {
	off := i * 7 % 256
	return pattern[off : off+size]
}

func benchPattern(size int) []byte {
	p := make([]byte, 256+size)
	for i := range p {
		p[i] = 'a' + byte(i*13%26)
	}
	return p
}

// benchRow is one line of the table: a figure per column.
type benchRow struct {
	name   string
	values [3]string // exact, approximate, Go map
}

func benchBundleSize(o bundleBenchOpts, vsize int, stdout, stderr io.Writer) error {
	tmp, err := os.MkdirTemp(o.dir, "marlin-bundle-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	progress := func(format string, args ...any) { fmt.Fprintf(stderr, "bundle bench: "+format+"\n", args...) }
	progress("%s pairs, 16-byte keys, %d-byte values, in %s", comma(int64(o.keys)), vsize, tmp)
	keys := newBenchKeys(o.keys)
	pat := benchPattern(vsize)
	var rows []benchRow
	add := func(name string, exact, approx, gomap string) {
		rows = append(rows, benchRow{name, [3]string{exact, approx, gomap}})
	}

	// Builds.
	exactPath, approxPath := filepath.Join(tmp, "exact.bundle"), filepath.Join(tmp, "approx.bundle")
	var buildRate [2]string
	var bpk [2]string
	for m, path := range []string{exactPath, approxPath} {
		progress("building %s", filepath.Base(path))
		start := time.Now()
		b, err := bundle.NewBuilder(nil, path, &bundle.BuildOptions{Approximate: m == 1, MemoryLimit: o.memory})
		if err != nil {
			return err
		}
		for i := range o.keys {
			if err := b.Add(keys.present(i), benchValue(pat, i, vsize)); err != nil {
				b.Abort()
				return err
			}
		}
		if err := b.Finish(); err != nil {
			return err
		}
		el := time.Since(start)
		st := b.Stats()
		buildRate[m] = fmt.Sprintf("%s/s (%.1f s, %d runs)", comma(int64(float64(o.keys)/el.Seconds())), el.Seconds(), st.Runs)
		bpk[m] = fmt.Sprintf("%.2f", float64(st.FileSize)/float64(st.Entries))
	}

	progress("writing a tsv dump and building from it")
	dump := filepath.Join(tmp, "pairs.tsv")
	if err := writeBenchDump(dump, keys, pat, vsize); err != nil {
		return err
	}
	fromDump := filepath.Join(tmp, "from-dump.bundle")
	start := time.Now()
	if err := runBundleBuild([]string{dump, "-o", fromDump, "--quiet", "--memory", strconv.FormatInt(o.memory, 10)}, io.Discard, stderr); err != nil {
		return err
	}
	dumpRate := fmt.Sprintf("%s/s (%.1f s)", comma(int64(float64(o.keys)/time.Since(start).Seconds())), time.Since(start).Seconds())
	if err := os.Remove(fromDump); err != nil {
		return err
	}
	if err := os.Remove(dump); err != nil {
		return err
	}

	// The Go map, built from the same keys and values (--go-map).
	var gm map[string][]byte
	mapBuildRate, mapBPK := "", ""
	if o.goMap {
		progress("building the Go map")
		runtime.GC()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start = time.Now()
		gm = make(map[string][]byte)
		for i := range o.keys {
			gm[string(keys.present(i))] = append([]byte(nil), benchValue(pat, i, vsize)...)
		}
		mapBuild := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		mapBuildRate = fmt.Sprintf("%s/s (%.1f s)", comma(int64(float64(o.keys)/mapBuild.Seconds())), mapBuild.Seconds())
		mapBPK = fmt.Sprintf("%.1f", float64(ms1.HeapAlloc-ms0.HeapAlloc)/float64(o.keys))
	}

	add("build from memory, pairs/s", buildRate[0], buildRate[1], mapBuildRate)
	add("build from a tsv dump ('bundle build'), pairs/s", dumpRate, "", "")
	add("bytes per key (file; map: Go heap)", bpk[0], bpk[1], mapBPK)

	// Lookups.
	var lookupRows [4][3]string // present, absent, probes present, probes absent
	for m, path := range []string{exactPath, approxPath} {
		r, err := bundle.Open(nil, path, nil)
		if err != nil {
			return err
		}
		if err := r.ForEach(func(k, v []byte) error { return nil }); err != nil { // into the page cache
			r.Close()
			return err
		}
		progress("lookups in %s", filepath.Base(path))
		get := func(k []byte) bool {
			_, err := r.Get(k)
			return err == nil
		}
		lookupRows[0][m] = benchLookups(o, keys.present, get, true)
		if m == 0 {
			lookupRows[1][m] = benchLookups(o, keys.absent, get, false)
		} else {
			lookupRows[1][m] = benchLookups(o, keys.absent, get, false) + " (any found: false positives)"
		}
		var pp, pa int
		sample := min(o.keys, 1000000)
		for i := range sample {
			a, err := r.Probes(keys.present(i * (o.keys / sample)))
			if err != nil {
				r.Close()
				return err
			}
			b, _ := r.Probes(keys.absent(i))
			pp, pa = pp+a, pa+b
		}
		lookupRows[2][m] = fmt.Sprintf("%.2f", float64(pp)/float64(sample))
		lookupRows[3][m] = fmt.Sprintf("%.2f", float64(pa)/float64(sample))
		if err := r.Close(); err != nil {
			return err
		}
	}
	if gm != nil {
		progress("lookups in the Go map")
		mget := func(k []byte) bool {
			v, ok := gm[string(k)]
			return ok && v[len(v)-1] != 0 // read the value, as Get does (no value byte is 0)
		}
		lookupRows[0][2] = benchLookups(o, keys.present, mget, true)
		lookupRows[1][2] = benchLookups(o, keys.absent, mget, false)
		runtime.KeepAlive(gm)
	}
	g := o.goroutines
	add(fmt.Sprintf("lookups/s, present keys, %d goroutines", g), lookupRows[0][0], lookupRows[0][1], lookupRows[0][2])
	add(fmt.Sprintf("lookups/s, absent keys, %d goroutines", g), lookupRows[1][0], lookupRows[1][1], lookupRows[1][2])
	add("entries read per lookup, present", lookupRows[2][0], lookupRows[2][1], "")
	add("entries read per lookup, absent", lookupRows[3][0], lookupRows[3][1], "")

	fmt.Fprintf(stdout, "\n%s pairs, 16-byte keys, %d-byte values (GOMAXPROCS %d)\n\n", comma(int64(o.keys)), vsize, runtime.GOMAXPROCS(0))
	fmt.Fprintln(stdout, "| | bundle, exact | bundle, approximate | Go map |")
	fmt.Fprintln(stdout, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(stdout, "| %s | %s | %s | %s |\n", r.name, orDash(r.values[0]), orDash(r.values[1]), orDash(r.values[2]))
	}
	if !o.engine {
		return nil
	}
	gm = nil
	runtime.GC()
	return benchEngineSide(o, keys, pat, vsize, tmp, exactPath, stdout, progress)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// benchLookups runs o.lookups lookups of key(i) for i in a scattered
// order from o.goroutines goroutines and returns the rate; every lookup
// must find (or, with !want, mostly miss) its key.
func benchLookups(o bundleBenchOpts, key func(int) []byte, get func([]byte) bool, want bool) string {
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := 0
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	for g := range o.goroutines {
		wg.Go(func() {
			w := 0
			for j := g; j < o.lookups; j += o.goroutines {
				i := int(uint64(j) * 2654435761 % uint64(o.keys)) // scattered
				if get(key(i)) != want {
					w++
				}
			}
			mu.Lock()
			wrong += w
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	s := comma(int64(float64(o.lookups)/el.Seconds())) + "/s"
	// The rate per second of CPU time the process used, times the
	// goroutines: what the lookups would reach on otherwise idle cores
	// (other work on the machine slows the wall-clock rate).
	if cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano()); cpu > 0 {
		s += fmt.Sprintf(" (%s/s on %d idle cores)", comma(int64(float64(o.lookups)/cpu.Seconds()*float64(o.goroutines))), o.goroutines)
	}
	if f := ru1.Majflt - ru0.Majflt; f > 0 {
		// The file was not all in the page cache after all.
		s += fmt.Sprintf(" (%s page faults read the disk)", comma(f))
	}
	if wrong > 0 {
		s += fmt.Sprintf(" (%d wrong)", wrong)
	}
	return s
}

// writeBenchDump writes the pairs as tsv, as 'marlin dump' would.
func writeBenchDump(path string, keys *benchKeys, pat []byte, vsize int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var line []byte
	for i := range keys.n {
		line = append(appendEscaped(line[:0], keys.present(i)), '\t')
		line = append(appendEscaped(line, benchValue(pat, i, vsize)), '\n')
		if _, err := w.Write(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
