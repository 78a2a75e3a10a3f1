package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// result is one in-process run of the command.
type result struct {
	stdout, stderr string
	code           int
}

// marlin runs the command in-process.
func marlin(t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{out.String(), errb.String(), code}
}

// marlinStdin runs the command with the given stdin.
func marlinStdin(t testing.TB, in string, args ...string) result {
	t.Helper()
	old := stdin
	stdin = strings.NewReader(in)
	defer func() { stdin = old }()
	return marlin(t, args...)
}

// writeInput writes n tsv pairs "key-%06d" -> value of size bytes to
// root/in.tsv and returns its path.
func writeInput(t testing.TB, root string, n, size int) string {
	return writeKeys(t, root, "key-%06d", n, size)
}

// writeKeys writes n tsv pairs, keys made of keyFmt and the pair's index,
// values of size bytes, to root/in.tsv and returns its path.
func writeKeys(t testing.TB, root, keyFmt string, n, size int) string {
	t.Helper()
	var b strings.Builder
	val := strings.Repeat("v", size)
	for i := range n {
		fmt.Fprintf(&b, keyFmt+"\t%s\n", i, val)
	}
	file := filepath.Join(root, "in.tsv")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o644))
	return file
}

// mustRun runs the command and requires exit status 0.
func mustRun(t testing.TB, args ...string) result {
	t.Helper()
	r := marlin(t, args...)
	require.Equal(t, 0, r.code, "marlin %v\nstdout:\n%s\nstderr:\n%s", args, r.stdout, r.stderr)
	return r
}

// fixturePairs are the live pairs of the fixture directory: printable and
// binary keys and values, characters the escaped forms must handle, an
// empty value and a large one.
func fixturePairs() map[string]string {
	m := map[string]string{
		"alpha":               "1",
		"beta":                "two words",
		"tab\tkey":            "new\nline",
		"back\\slash":         "cr\rhere",
		"naïve":               "café ☕",
		"bin\x00\x01\xff":     "\xfe\xed\xfa\xce",
		"empty-value":         "",
		"quote\"brace{":       "{\"json\": [1, 2]}",
		"zero-width\u200bsp":  "del\x7f",
		"big":                 strings.Repeat("0123456789abcdef", 64),
		"user:1":              "ada",
		"user:2":              "grace",
		"user:3":              "edsger",
		"ttl-far-future":      "still here",
		"overwritten":         "new value",
		"invalid\xc3(utf8":    "x\xe2\x82",
		"lone\\xhex-looking":  "\\x41 is not A",
		"\u2028line-separate": "\u0085next-line",
	}
	for i := range 120 {
		m[fmt.Sprintf("filler:%03d", i)] = fmt.Sprintf("value %03d %s", i, strings.Repeat("=", 40+i%17))
	}
	return m
}

// makeFixture builds the small deterministic directory the golden tests
// read: several segments (4 KiB each), overwrites, deletes, a batch and a
// key with a TTL a century away. Everything is deterministic (no timed
// flushes, no background work) except the snapshot's creation time and the
// TTL key's expiry, which the golden comparison normalizes.
func makeFixture(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "db")
	db, err := engine.Open(dir, fixtureOpts())
	require.NoError(t, err)
	pairs := fixturePairs()
	keys := sortedKeys(pairs)
	require.NoError(t, db.Put([]byte("overwritten"), []byte("old value")))
	require.NoError(t, db.Put([]byte("deleted"), []byte("gone soon")))
	for i := 0; i < 120; i += 4 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "filler:%03d", i), []byte("superseded")))
	}
	var b engine.Batch
	for _, k := range keys {
		switch k {
		case "ttl-far-future":
			require.NoError(t, db.PutTTL([]byte(k), []byte(pairs[k]), 100*365*24*time.Hour))
		case "user:1", "user:2", "user:3":
			b.Put([]byte(k), []byte(pairs[k]))
		default:
			require.NoError(t, db.Put([]byte(k), []byte(pairs[k])))
		}
	}
	b.Delete([]byte("deleted"))
	require.NoError(t, db.Write(&b))
	require.NoError(t, db.Close())
	return dir
}

func fixtureOpts() *engine.Options {
	return &engine.Options{
		SegmentSize:         4 << 10,
		MaxValueSize:        2 << 10,
		Sync:                engine.SyncNone,
		SyncInterval:        time.Hour, // no timed flush: file contents depend only on the writes
		CompactionThreshold: -1,
		ExpiryInterval:      -1,
		Logger:              warnLogger(os.Stderr),
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// segFiles lists dir's segment files, oldest first.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if _, ok := segment.ParseFileName(e.Name()); ok {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// readPairs opens dir read-only and returns its pairs.
func readPairs(t testing.TB, dir string) map[string]string {
	t.Helper()
	db, err := engine.Open(dir, &engine.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	m := map[string]string{}
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		m[string(k)] = string(v)
		return nil
	}))
	return m
}

var (
	reTime     = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	reAgo      = regexp.MustCompile(`\(-?[0-9hms.µ]+ ago\)`)
	reDuration = regexp.MustCompile(`\bin [0-9.]+(ns|µs|ms|s|m[0-9.]+s)\b`)
	reRate     = regexp.MustCompile(`\([0-9,]+ pairs/s\)`)
	reAge      = regexp.MustCompile(`"(age_seconds|seconds)": [0-9.e+-]+`)
)

// normalize replaces what changes from run to run: the temp dir, times,
// ages, durations and rates.
var reRepairStamp = regexp.MustCompile(`\.repair-\d{8}T\d{6}Z\.`)

func normalize(s, dir string) string {
	if dir != "" {
		s = strings.ReplaceAll(s, dir, "DIR")
	}
	s = reRepairStamp.ReplaceAllString(s, ".repair-STAMP.")
	s = reTime.ReplaceAllString(s, "TIME")
	s = reAgo.ReplaceAllString(s, "(AGE ago)")
	s = reDuration.ReplaceAllString(s, "in DURATION")
	s = reRate.ReplaceAllString(s, "(RATE pairs/s)")
	s = reAge.ReplaceAllString(s, `"$1": N`)
	return s
}

// golden compares got with testdata/golden/name.txt (rewritten with
// -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run: go test ./tools/marlin -run Golden -update")
	require.Equal(t, string(want), got, "output differs from %s (if intended, rerun with -update)", path)
}
