package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// bundlePairs reads every pair of a bundle with 'marlin bundle dump'
// (hex, so any byte survives).
func bundlePairs(t *testing.T, file string) map[string]string {
	t.Helper()
	r := mustRun(t, "bundle", "dump", "--format", "hex", file)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "\t")
		require.True(t, ok, line)
		kb, err := decodeHex(nil, []byte(k))
		require.NoError(t, err)
		vb, err := decodeHex(nil, []byte(v))
		require.NoError(t, err)
		_, dup := m[string(kb)]
		require.False(t, dup, "key %q twice", kb)
		m[string(kb)] = string(vb)
	}
	return m
}

// TestBundleBuildSources builds from a data directory, from its dump in
// each format (a file and stdin), and checks every pair with dump and get.
func TestBundleBuildSources(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	want := randomPairs(rnd, 400)
	for k, v := range fixturePairs() {
		want[k] = v
	}
	dir := writeDB(t, want)
	tmp := t.TempDir()

	out := filepath.Join(tmp, "dir.bundle")
	r := mustRun(t, "bundle", "build", dir, "-o", out, "--quiet")
	require.Contains(t, r.stdout, fmt.Sprintf("built %s: %d pairs from %s", out, len(want), dir))
	require.Equal(t, want, bundlePairs(t, out))

	for _, format := range []string{"tsv", "jsonl", "hex"} {
		dump := mustRun(t, "dump", "--format", format, dir).stdout
		file := filepath.Join(tmp, "in."+format)
		require.NoError(t, os.WriteFile(file, []byte(dump), 0o644))
		inFormat := format
		if format != "hex" {
			inFormat = "auto" // detected
		}
		out := filepath.Join(tmp, format+".bundle")
		mustRun(t, "bundle", "build", "--format", inFormat, file, "-o", out, "--quiet")
		require.Equal(t, want, bundlePairs(t, out), format)

		out = filepath.Join(tmp, format+"-stdin.bundle")
		r := marlinStdin(t, dump, "bundle", "build", "--format", inFormat, "-o", out, "--quiet", "--memory", "256KiB")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "from stdin")
		require.Equal(t, want, bundlePairs(t, out), format)
	}

	for k, v := range fixturePairs() {
		got := mustRun(t, "bundle", "get", "--raw", out, k).stdout
		require.Equal(t, v, got)
		esc := string(appendEscaped(nil, []byte(k)))
		require.Equal(t, v, mustRun(t, "bundle", "get", "--escaped", out, esc).stdout) // piped: as stored
		require.Equal(t, string(appendEscaped(nil, []byte(v)))+"\n", mustRun(t, "bundle", "get", "--escaped-value", out, k).stdout)
		require.Equal(t, string(appendHex(nil, []byte(v)))+"\n",
			mustRun(t, "bundle", "get", "--hex", out, string(appendHex(nil, []byte(k)))).stdout)
	}
	r = marlin(t, "bundle", "get", out, "no such key")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `key "no such key" not found`)
}

// TestBundleBuildDuplicatesAndRuns: in several files, the last value of a
// key wins (or --strict fails and writes nothing); a tiny --memory sorts
// on disk.
func TestBundleBuildDuplicatesAndRuns(t *testing.T) {
	tmp := t.TempDir()
	var a, b strings.Builder
	want := map[string]string{}
	for i := range 20000 {
		fmt.Fprintf(&a, "key-%05d\tfirst %d\n", i, i)
		want[fmt.Sprintf("key-%05d", i)] = fmt.Sprintf("first %d", i)
	}
	for i := 0; i < 20000; i += 3 {
		fmt.Fprintf(&b, "key-%05d\tsecond %d\n", i, i)
		want[fmt.Sprintf("key-%05d", i)] = fmt.Sprintf("second %d", i)
	}
	fa, fb := filepath.Join(tmp, "a.tsv"), filepath.Join(tmp, "b.tsv")
	require.NoError(t, os.WriteFile(fa, []byte(a.String()), 0o644))
	require.NoError(t, os.WriteFile(fb, []byte(b.String()), 0o644))
	out := filepath.Join(tmp, "out.bundle")
	r := mustRun(t, "bundle", "build", fa, fb, "-o", out, "--memory", "256KiB", "--quiet")
	require.Contains(t, r.stdout, "20,000 pairs from 2 files")
	require.Contains(t, r.stdout, "6,667 duplicates replaced by a later value")
	require.Regexp(t, `sorted in \d+ runs on disk`, r.stdout)
	require.Equal(t, want, bundlePairs(t, out))

	strict := filepath.Join(tmp, "strict.bundle")
	r = marlin(t, "bundle", "build", "--strict", fa, fb, "-o", strict)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `duplicate key: "key-`)
	require.Contains(t, r.stderr, "was not written")
	_, err := os.Stat(strict)
	require.True(t, os.IsNotExist(err))

	// A malformed line stops the build; nothing is written.
	bad := filepath.Join(tmp, "bad.tsv")
	require.NoError(t, os.WriteFile(bad, []byte("k1\tv1\nno tab here\n"), 0o644))
	r = marlin(t, "bundle", "build", bad, "-o", strict)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "bad.tsv:2: no tab")
	_, err = os.Stat(strict)
	require.True(t, os.IsNotExist(err))
	require.ElementsMatch(t, []string{"a.tsv", "b.tsv", "bad.tsv", "out.bundle"}, dirNames(t, tmp))
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestBundleInspectVerify: inspect's figures (text and JSON), verify of a
// good and of a damaged bundle, and approximate mode through the CLI.
func TestBundleInspectVerify(t *testing.T) {
	tmp := t.TempDir()
	in := writeKeys(t, tmp, "user:%06d", 3000, 20)
	exact, approx := filepath.Join(tmp, "e.bundle"), filepath.Join(tmp, "a.bundle")
	mustRun(t, "bundle", "build", in, "-o", exact, "--quiet", "--seed", "77")
	mustRun(t, "bundle", "build", in, "-o", approx, "--quiet", "--approximate")

	r := mustRun(t, "bundle", "inspect", exact)
	for _, s := range []string{"exact: keys stored", "pairs        3,000", "keys         32 KiB (11.0 bytes on average)",
		"16 bytes per pair", "32 buckets of 93.8 pairs", "seed 0x000000000000004d"} {
		require.Contains(t, r.stdout, s)
	}
	var info bundleInfo
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "bundle", "inspect", "--json", approx).stdout), &info))
	require.Equal(t, "approximate", info.Mode)
	require.Equal(t, int64(3000), info.Pairs)
	require.Zero(t, info.KeyBytes)
	require.InDelta(t, 3000/1.2089258196146292e24, info.FalsePositiveRate, 1e-30)
	fi, err := os.Stat(approx)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), info.FileBytes)

	require.Contains(t, mustRun(t, "bundle", "verify", exact).stdout, "ok: 3,000 pairs")
	require.Equal(t, strings.Repeat("v", 20), mustRun(t, "bundle", "get", approx, "user:000042").stdout)
	r = marlin(t, "bundle", "dump", approx)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "is approximate")

	// Damage one byte of the data: verify finds it, get of that key fails.
	b, err := os.ReadFile(exact)
	require.NoError(t, err)
	b[100] ^= 0x40
	require.NoError(t, os.WriteFile(exact, b, 0o644))
	r = marlin(t, "bundle", "verify", exact)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "corrupt file")
	require.Contains(t, r.stderr, "data section checksum")
	bad := 0
	for i := range 3000 {
		r := marlin(t, "bundle", "get", exact, fmt.Sprintf("user:%06d", i))
		if r.code != 0 {
			require.Contains(t, r.stderr, "corrupt file")
			bad++
		} else {
			require.Equal(t, strings.Repeat("v", 20), r.stdout)
		}
	}
	require.Equal(t, 1, bad)
}

// TestBundleBuildRefusesOpenDir: a directory open for writing is refused
// with the same advice as dump's.
func TestBundleBuildRefusesOpenDir(t *testing.T) {
	dir := writeDB(t, map[string]string{"k": "v"})
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	defer db.Close()
	r := marlin(t, "bundle", "build", dir, "-o", filepath.Join(t.TempDir(), "b"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "is open for writing by another process")
}

// TestBundleUsage: the subcommand list, unknown commands, missing -o.
func TestBundleUsage(t *testing.T) {
	r := marlin(t, "bundle", "--help")
	require.Equal(t, 0, r.code)
	for _, c := range []string{"build", "inspect", "verify", "get", "dump"} {
		require.Contains(t, r.stdout, "  "+c+" ")
	}
	r = marlin(t, "bundle", "frobnicate")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `unknown command "frobnicate"`)
	r = marlin(t, "bundle", "build", "x")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "want -o FILE")
	r = marlin(t, "bundle", "build", "--memory", "1KiB", "-o", filepath.Join(t.TempDir(), "b"), "-")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "memory limit")
	require.Contains(t, marlin(t, "help").stdout, "bundle")
}

// TestBundleBuildInterrupt sends SIGINT to a child process building from
// a slow stdin: it stops, says so, and leaves no file (neither under the
// name nor temporary ones).
func TestBundleBuildInterrupt(t *testing.T) {
	if out := os.Getenv("MARLIN_BUNDLE_CHILD"); out != "" {
		os.Exit(run([]string{"bundle", "build", "-", "-o", out, "--memory", "256KiB"}, os.Stdout, os.Stderr))
	}
	tmp := t.TempDir()
	out := filepath.Join(tmp, "b")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBundleBuildInterrupt$")
	cmd.Env = append(os.Environ(), "MARLIN_BUNDLE_CHILD="+out)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	w := bufio.NewWriter(stdin)
	for i := range 100000 { // several runs on disk
		fmt.Fprintf(w, "key %d\t%s\n", i, strings.Repeat("x", 50))
	}
	require.NoError(t, w.Flush())
	// The scratch directory of the runs shows the build is under way, its
	// interrupt handler in place (set before the builder is made).
	deadline := time.Now().Add(time.Minute)
	for !slices.ContainsFunc(dirNames(t, tmp), func(n string) bool { return strings.HasSuffix(n, ".scratch") }) {
		require.True(t, time.Now().Before(deadline), "no scratch directory from the child")
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	// The build notices at its next pairs: send some more, then end.
	for range 5000 {
		if _, err := io.WriteString(stdin, "k\tv\n"); err != nil {
			break
		}
	}
	stdin.Close()
	err = cmd.Wait()
	require.Error(t, err)
	require.Equal(t, 1, cmd.ProcessState.ExitCode(), stderr.String())
	require.Contains(t, stderr.String(), "interrupted: nothing was written to "+out)
	require.Empty(t, dirNames(t, tmp), "files left")
	_, err = bundle.Open(nil, out, nil)
	require.Error(t, err)
}

// TestShareChild is the sharing child of TestBundleBench's run (the
// bench starts it as its own executable).
func TestShareChild(t *testing.T) {
	path := os.Getenv(shareChildEnv)
	if path == "" {
		t.Skip("run by TestBundleBench as its child")
	}
	if err := shareChild(path, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestBundleBench runs the benchmark small: every figure is there, no
// lookup went wrong, and the sharing processes' mappings of the bundle
// add up to one copy, not eight.
func TestBundleBench(t *testing.T) {
	shareChildArgs = []string{"-test.run=^TestShareChild$", "-test.count=1"}
	r := mustRun(t, "bundle", "bench", "--keys", "20000", "--value-size", "8,100", "--dir", t.TempDir(), "--drop-caches=false")
	for _, s := range []string{"20,000 pairs, 16-byte keys, 8-byte values", "20,000 pairs, 16-byte keys, 100-byte values",
		"| build from memory, pairs/s |", "| build from a tsv dump ('bundle build'), pairs/s |", "| bytes per key",
		"| lookups/s, present keys, 2 goroutines |", "| entries read per lookup, absent |",
		"| engine, the pairs in its log |", "| engine over the bundle as base, empty delta |",
		"| engine over the bundle, delta of 1% of the keys |", "bundle, page cache dropped:", "sharing: 8 processes"} {
		require.Contains(t, r.stdout, s)
	}
	require.NotContains(t, r.stdout, "wrong")
	m := regexp.MustCompile(`private copies \((\d+\.\d+)x\)`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, r.stdout)
	ratio, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	require.Less(t, ratio, 0.25, "8 readers of one bundle share its pages")
}

// TestBundleBuildTTLs: a bundle has no TTLs. From a directory a key with a
// TTL goes in without it; from a dump, a pair with an expiry stops the
// build and nothing is written.
func TestBundleBuildTTLs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("plain"), []byte("p")))
	require.NoError(t, db.PutTTL([]byte("session"), []byte("s"), time.Hour))
	require.NoError(t, db.Close())
	tmp := t.TempDir()
	out := filepath.Join(tmp, "b")
	mustRun(t, "bundle", "build", dir, "-o", out, "--quiet")
	require.Equal(t, map[string]string{"plain": "p", "session": "s"}, bundlePairs(t, out))

	dump := filepath.Join(tmp, "ttl.tsv")
	require.NoError(t, os.WriteFile(dump, []byte(mustRun(t, "dump", dir).stdout), 0o644))
	out2 := filepath.Join(tmp, "b2")
	r := marlin(t, "bundle", "build", dump, "-o", out2)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "has an expiry")
	_, err = os.Stat(out2)
	require.True(t, os.IsNotExist(err))
}

// TestBundleFoldCLI: 'bundle build DIR --switch' makes a directory's
// pairs its first base; with a base, 'bundle build DIR' folds by itself;
// dump, get and verify see the merged view; 'bundle base' shows and
// switches the base.
func TestBundleFoldCLI(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "db")
	src := filepath.Join(tmp, "in.tsv")
	require.NoError(t, os.WriteFile(src, []byte("a\t1\nb\t2\nc\t3\n"), 0o644))
	ok := func(args ...string) string {
		t.Helper()
		res := marlin(t, args...)
		require.Equal(t, 0, res.code, "%v: %s", args, res.stderr)
		return res.stdout
	}
	ok("load", "--create", dir, src)
	require.Contains(t, ok("bundle", "base", dir), "has no base")
	out := ok("bundle", "build", dir, "--switch", "--quiet")
	require.Contains(t, out, "3 pairs")
	require.Contains(t, out, "3 entries dropped")
	require.Contains(t, ok("bundle", "base", dir), "3 pairs")
	ok("put", dir, "d", "4")
	ok("delete", dir, "a")
	dumped := func() []string {
		lines := strings.Split(strings.TrimSpace(ok("dump", dir)), "\n")
		sort.Strings(lines)
		return lines
	}
	want := []string{"b\t2", "c\t3", "d\t4"}
	require.Equal(t, want, dumped())
	out = ok("bundle", "build", dir, "--quiet") // has a base: a fold
	require.Contains(t, out, "folded base")
	require.Equal(t, want, dumped())
	require.Equal(t, "4", ok("get", dir, "d"))
	res := marlin(t, "get", dir, "a")
	require.NotEqual(t, 0, res.code)
	require.Contains(t, ok("verify", dir), "OK")

	// An export only, and a switch to it.
	exp := filepath.Join(tmp, "export.bundle")
	ok("bundle", "build", dir, "--switch=false", "-o", exp, "--quiet")
	require.Equal(t, "2", ok("bundle", "get", exp, "b"))
	require.Contains(t, ok("bundle", "base", dir, exp), "is the base of")
	require.Equal(t, want, dumped())

	res = marlin(t, "bundle", "build", dir, "--approximate", "--quiet")
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.stderr, "approximate")
}
