package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// The second half of 'marlin bundle bench': the engine beside the bundle
// (the same pairs in a database's log), the engine over the bundle as its
// base (empty delta, then a delta of 1% of the keys), disk reads per
// lookup with the page cache dropped, and several processes sharing one
// bundle through the page cache.

// shareChildEnv makes 'marlin bundle bench' a sharing child: it maps the
// bundle named by the variable, reads all of it, says "ready" and waits
// for its standard input to close.
const shareChildEnv = "MARLIN_BUNDLE_SHARE_CHILD"

// shareChildArgs are the arguments a sharing child runs this executable
// with (tests, whose executable is the test binary, replace them).
var shareChildArgs = []string{"bundle", "bench"}

// benchEngineSide runs the second half for the exact bundle at path and
// prints its table.
func benchEngineSide(o bundleBenchOpts, keys *benchKeys, pat []byte, vsize int, tmp, path string, stdout io.Writer, progress func(string, ...any)) error {
	type row struct{ name, present, absent string }
	var rows []row
	get := func(db *engine.DB) func([]byte) bool {
		return func(k []byte) bool {
			err := db.View(k, func(v []byte) error { return nil })
			return err == nil
		}
	}
	r, err := bundle.Open(nil, path, nil)
	if err != nil {
		return err
	}
	err = r.ForEach(func(k, v []byte) error { return nil })
	if err == nil {
		bget := func(k []byte) bool { _, err := r.Get(k); return err == nil }
		progress("lookups in the bundle again, beside the engine")
		rows = append(rows, row{"bundle, exact", benchLookups(o, keys.present, bget, true), benchLookups(o, keys.absent, bget, false)})
	}
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	lookups := func(db *engine.DB, name string) {
		rows = append(rows, row{name, benchLookups(o, keys.present, get(db), true), benchLookups(o, keys.absent, get(db), false)})
	}

	// The engine with the same pairs in its log.
	dbDir := filepath.Join(tmp, "engine")
	err = withBenchDB(dbDir, "", func(db *engine.DB) error {
		progress("loading the pairs into a database")
		if err := benchPutEvery(db, keys, pat, vsize, 1, 0); err != nil {
			return err
		}
		progress("lookups in the database")
		lookups(db, "engine, the pairs in its log")
		return nil
	})
	if err != nil {
		return err
	}

	// The engine over the bundle as its base.
	err = withBenchDB(dbDir, path, func(db *engine.DB) error {
		progress("lookups in a database over the bundle as its base")
		lookups(db, "engine over the bundle as base, empty delta")
		progress("overwriting 1%% of the keys in the delta")
		if err := benchPutEvery(db, keys, pat, vsize, 100, 1); err != nil {
			return err
		}
		lookups(db, "engine over the bundle, delta of 1% of the keys")
		return nil
	})
	if err != nil {
		return err
	}

	// Cold lookups: the page cache dropped (root only), one goroutine.
	// (Pages a mapping uses are not dropped: the bundle is closed here.)
	cold := "- (dropping the page cache needs root)"
	if !o.dropCaches {
		cold = "- (--drop-caches=false)"
	} else if err := dropCaches(); err == nil {
		progress("cold lookups (page cache dropped)")
		if r, err = bundle.Open(nil, path, nil); err != nil {
			return err
		}
		cold = coldLookups(o, r, keys)
		if err := r.Close(); err != nil {
			return err
		}
	}

	// Sharing.
	progress("8 processes sharing the bundle")
	share, err := benchSharing(path, 8)
	if err != nil {
		share = "- (" + err.Error() + ")"
	}

	fmt.Fprintf(stdout, "\nThe engine beside the bundle (%s pairs, %d-byte values, %d goroutines)\n\n", comma(int64(o.keys)), vsize, o.goroutines)
	fmt.Fprintln(stdout, "| | lookups/s, present keys | lookups/s, absent keys |")
	fmt.Fprintln(stdout, "|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(stdout, "| %s | %s | %s |\n", r.name, r.present, r.absent)
	}
	fmt.Fprintf(stdout, "\nbundle, page cache dropped: %s\n", cold)
	fmt.Fprintf(stdout, "sharing: %s\n", share)
	return nil
}

// withBenchDB opens a new database in dir (over the base bundle at base,
// if not ""), runs fn, closes it and removes dir.
func withBenchDB(dir, base string, fn func(db *engine.DB) error) error {
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone, CompactionThreshold: -1, DisableSnapshots: true, Base: base})
	if err != nil {
		return err
	}
	err = fn(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if rerr := os.RemoveAll(dir); err == nil {
		err = rerr
	}
	return err
}

// benchPutEvery writes every step-th key, with the value of the key
// shift places on (another value than the bundle's when shift is not 0),
// in batches of 1000.
func benchPutEvery(db *engine.DB, keys *benchKeys, pat []byte, vsize, step, shift int) error {
	var b engine.Batch
	for i := 0; i < keys.n; i += step {
		b.Put(keys.present(i), benchValue(pat, i+shift, vsize))
		if b.Len() == 1000 || i+step >= keys.n {
			if err := db.Write(&b); err != nil {
				return err
			}
			b.Reset()
		}
	}
	return nil
}

// dropCaches empties the page cache.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// coldLookups times lookups of scattered present keys from one goroutine
// on a just-dropped page cache and counts the page faults that read the
// disk (the mapping is advised random, so a fault reads one page).
func coldLookups(o bundleBenchOpts, r *bundle.Reader, keys *benchKeys) string {
	n := min(o.keys, 20000)
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	miss := 0
	for j := range n {
		i := int(uint64(j) * 2654435761 % uint64(o.keys))
		if _, err := r.Get(keys.present(i)); err != nil {
			miss++
		}
	}
	el := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	s := fmt.Sprintf("%d lookups from 1 goroutine: %s/s, %.2f disk reads (major page faults) per lookup",
		n, comma(int64(float64(n)/el.Seconds())), float64(ru1.Majflt-ru0.Majflt)/float64(n))
	if miss > 0 {
		s += fmt.Sprintf(" (%d wrong)", miss)
	}
	return s
}

// benchSharing starts procs processes that each map the bundle and read
// all of it, then sums their proportional set sizes (PSS: a shared page
// counts 1/k to each of its k users) against procs times the file's size.
func benchSharing(path string, procs int) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	var cmds []*exec.Cmd
	var stdins []io.Closer
	defer func() {
		for _, c := range stdins {
			c.Close()
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}()
	for range procs {
		c := exec.Command(self, shareChildArgs...)
		c.Env = append(os.Environ(), shareChildEnv+"="+path)
		in, err := c.StdinPipe()
		if err != nil {
			return "", err
		}
		out, err := c.StdoutPipe()
		if err != nil {
			return "", err
		}
		if err := c.Start(); err != nil {
			return "", err
		}
		cmds, stdins = append(cmds, c), append(stdins, in)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			return "", fmt.Errorf("a sharing child failed: %q %v", line, err)
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var mapped, total int64
	for _, c := range cmds {
		m, t, err := pssKiB(c.Process.Pid, abs)
		if err != nil {
			return "", err
		}
		mapped, total = mapped+m<<10, total+t<<10
	}
	copies := int64(procs) * fi.Size()
	return fmt.Sprintf("%d processes each read all of a %s bundle: the bundle's mappings' summed PSS %s against %s for %d private copies (%.3fx); "+
		"the processes' whole PSS %s (Go runtimes included)",
		procs, ibytes(fi.Size()), ibytes(mapped), ibytes(copies), procs, float64(mapped)/float64(copies), ibytes(total)), nil
}

// pssKiB reads a process's proportional set size (a shared page counts
// 1/k to each of its k users) from /proc/PID/smaps: that of its mappings
// of file, and its whole.
func pssKiB(pid int, file string) (mapped, total int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, err
	}
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			in = len(f) >= 6 && f[len(f)-1] == file // a mapping's header line
		case len(f) >= 2 && f[0] == "Pss:":
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, 0, err
			}
			total += kb
			if in {
				mapped += kb
			}
		}
	}
	return mapped, total, nil
}

// shareChild is a sharing child's whole run.
func shareChild(path string, stdin io.Reader, stdout io.Writer) error {
	r, err := bundle.Open(nil, path, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	var sum int
	if err := r.ForEach(func(k, v []byte) error { sum += len(v); return nil }); err != nil {
		return err
	}
	runtime.KeepAlive(sum)
	fmt.Fprintln(stdout, "ready")
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}
