package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

// randomPairs returns pairs of arbitrary bytes, biased towards the bytes
// the text forms treat specially.
func randomPairs(rnd *rand.Rand, n int) map[string]string {
	special := []byte("\\\t\n\r\x00\x7f\"{}x\xff\xc3\xa9\xe2\x80\xa8 ")
	gen := func(lo, hi int) string {
		b := make([]byte, lo+rnd.IntN(hi-lo+1))
		for i := range b {
			if rnd.IntN(3) == 0 {
				b[i] = special[rnd.IntN(len(special))]
			} else {
				b[i] = byte(rnd.IntN(256))
			}
		}
		return string(b)
	}
	m := map[string]string{}
	for len(m) < n {
		m[gen(1, 40)] = gen(0, 200)
	}
	return m
}

func writeDB(t *testing.T, pairs map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	for k, v := range pairs {
		require.NoError(t, db.Put([]byte(k), []byte(v)))
	}
	require.NoError(t, db.Close())
	return dir
}

// TestDumpLoadRoundTrip: dump in each format, then load into a new
// directory (from a file and from stdin), gives the same pairs.
func TestDumpLoadRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	sources := map[string]string{"fixture": makeFixture(t), "random": writeDB(t, randomPairs(rnd, 500))}
	for sname, src := range sources {
		want := readPairs(t, src)
		for _, f := range [][]string{{"--format", "tsv"}, {"--format", "jsonl"}, {"--format", "jsonl", "--base64"}, {"--format", "hex"}} {
			t.Run(sname+strings.Join(f, ""), func(t *testing.T) {
				out := mustRun(t, append(append([]string{"dump"}, f...), src)...).stdout
				require.Equal(t, len(want), strings.Count(out, "\n"), "one line per pair")
				require.True(t, utf8.ValidString(out), "dump output is not UTF-8")
				file := filepath.Join(t.TempDir(), "pairs")
				require.NoError(t, os.WriteFile(file, []byte(out), 0o644))
				format := []string{"--format", f[1]}
				if f[1] != "hex" {
					format = nil // auto-detected
				}
				dst := filepath.Join(t.TempDir(), "dst")
				mustRun(t, append(append([]string{"load", "--create", "--quiet"}, format...), dst, file)...)
				require.Equal(t, want, readPairs(t, dst))

				dst2 := filepath.Join(t.TempDir(), "dst2")
				r := marlinStdin(t, out, append(append([]string{"load", "--create", "--quiet"}, format...), dst2)...)
				require.Equal(t, 0, r.code, r.stderr)
				require.Equal(t, want, readPairs(t, dst2))
			})
		}
	}
}

func TestLoadMalformed(t *testing.T) {
	cases := []struct {
		name, format, input string
		line                int
		want                string
	}{
		{"tsv-no-tab", "", "a\t1\nb\t2\njust a key\nc\t3\n", 3, "no tab between key and value"},
		{"tsv-two-tabs", "", "a\t1\nb\t2\t3\n", 2, "a tab inside a key or value is written"},
		{"tsv-bad-escape", "", "a\t1\n\n\nb\\x4g\t2\n", 4, `key: bad \x escape`},
		{"tsv-trailing-backslash", "", "a\t1\\\n", 1, "backslash at the end"},
		{"tsv-empty-key", "", "a\t1\n\tv\n", 2, "empty key"},
		{"tsv-key-too-long", "", "a\t1\n" + strings.Repeat("k", 251) + "\tv\n", 2, "longer than --max-key-size 250"},
		{"jsonl-truncated", "", `{"key":"a","value":"1"}` + "\n" + `{"key":"b","value":"2"` + "\n", 2, "want ',' or '}'"},
		{"jsonl-unknown-field", "", `{"key":"a","value":"1"}` + "\n" + `{"key":"b","val":"2"}` + "\n", 2, `unknown field "val"`},
		{"jsonl-no-value", "", `{"key":"a","value":"1"}` + "\n" + `{"key":"b"}` + "\n", 2, `no "value"`},
		{"jsonl-bad-base64", "", `{"key":"a","value":"1"}` + "\n" + `{"key":"b","value_b64":"!!"}` + "\n", 2, "bad base64"},
		{"jsonl-number", "", `{"key":"a","value":1}` + "\n", 1, "want a string"},
		{"jsonl-twice", "", `{"key":"a","key_b64":"YQ==","value":"1"}` + "\n", 1, "given twice"},
		{"jsonl-bad-utf8", "", "{\"key\":\"a\xff\",\"value\":\"1\"}\n", 1, "invalid UTF-8"},
		{"jsonl-trailing", "", `{"key":"a","value":"1"} x` + "\n", 1, "text after the JSON object"},
		{"jsonl-then-tsv", "", `{"key":"a","value":"1"}` + "\na\tb\n", 2, "not a JSON object"},
		{"hex-odd", "hex", "61\t31\n6\t31\n", 2, "key: bad hex"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, "in")
			require.NoError(t, os.WriteFile(file, []byte(c.input), 0o644))
			dst := filepath.Join(root, "db")
			args := []string{"load", "--create", "--quiet", "--batch", "1"}
			if c.format != "" {
				args = append(args, "--format", c.format)
			}
			r := marlin(t, append(args, dst, file)...)
			require.Equal(t, 1, r.code)
			require.Contains(t, r.stderr, fmt.Sprintf("%s:%d: ", file, c.line))
			require.Contains(t, r.stderr, c.want)
			require.Contains(t, r.stderr, "nothing from that line on")
			// Every good line before the bad one is loaded, nothing else.
			got := readPairs(t, dst)
			require.Len(t, got, countGood(c.input, c.line))
			if c.line > 1 {
				require.Equal(t, "1", got["a"])
			}
			// --dry-run finds the same line and does not create the directory.
			dry := filepath.Join(root, "dry")
			r = marlin(t, append(append(args, "--dry-run"), dry, file)...)
			require.Equal(t, 1, r.code)
			require.Contains(t, r.stderr, fmt.Sprintf("%s:%d: ", file, c.line))
			require.NoDirExists(t, dry)
		})
	}
}

// countGood counts the non-empty lines before line bad (1-based).
func countGood(input string, bad int) int {
	n := 0
	for i, l := range strings.Split(input, "\n") {
		if i+1 >= bad {
			break
		}
		if l != "" {
			n++
		}
	}
	return n
}

func TestLoadMultipleFilesDuplicatesAndCRLF(t *testing.T) {
	root := t.TempDir()
	f1 := filepath.Join(root, "one.tsv")
	f2 := filepath.Join(root, "two.jsonl")
	var b strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&b, "k%d\tfirst %d\r\n", i%1000, i) // CRLF line ends
	}
	require.NoError(t, os.WriteFile(f1, []byte(b.String()), 0o644))
	require.NoError(t, os.WriteFile(f2, []byte(`{ "value" : "from json", "key" : "k7" }`+"\n"), 0o644))
	dst := filepath.Join(root, "db")
	r := mustRun(t, "load", "--create", "--quiet", "--batch", "300", dst, f1, f2)
	require.Contains(t, r.stdout, "loaded 2,501 pairs from 2 files")
	require.Contains(t, r.stdout, "it holds 1,000 keys")
	got := readPairs(t, dst)
	require.Len(t, got, 1000)
	require.Equal(t, "first 2003", got["k3"], "the last duplicate wins")
	require.Equal(t, "from json", got["k7"])
}

func TestLoadLongLines(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 900<<10) // over the reader's 1 MiB buffer in every form
	for i := range big {
		big[i] = byte(rnd.IntN(256))
	}
	want := map[string]string{"big": string(big), "small": "x"}
	src := writeDB(t, want)
	for _, format := range []string{"tsv", "jsonl", "hex"} {
		out := mustRun(t, "dump", "--format", format, src).stdout
		require.Greater(t, len(out), 1<<20)
		dst := filepath.Join(t.TempDir(), "db")
		r := marlinStdin(t, out, "load", "--create", "--quiet", "--format", format, dst)
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, want, readPairs(t, dst))
	}
	dst := filepath.Join(t.TempDir(), "db")
	r := marlinStdin(t, "a\t"+strings.Repeat("v", 2000)+"\n", "load", "--create", "--quiet", "--max-value-size", "100", dst)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "stdin:1: ")
}

func TestLoadProgress(t *testing.T) {
	l := &loader{}
	l.written.Store(1_500_000)
	l.read.Store(40 << 20)
	var b bytes.Buffer
	l.progress(&b, timeAgo(2), false)
	require.Regexp(t, `^load: 1,500,000 pairs, 7[0-9]{2},[0-9]{3}/s, 40 MiB read, 2s\n$`, b.String())
}

func TestEscapeForms(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"a\tb\nc\rd\\e": `a\tb\nc\rd\\e`,
		"\x00\x1f\x7f":  `\x00\x1f\x7f`,
		"naïve ☕":       "naïve ☕",
		"\xff\xc3":      `\xff\xc3`,
		"\u200b\u2028":  `\xe2\x80\x8b\xe2\x80\xa8`,
		`\x41`:          `\\x41`,
	} {
		require.Equal(t, want, string(appendEscaped(nil, []byte(in))), "%q", in)
		back, err := unescape(nil, []byte(want))
		require.NoError(t, err)
		require.Equal(t, in, string(back))
	}
	_, err := unescape(nil, []byte(`\X41`))
	require.ErrorContains(t, err, "unknown escape")
	b, err := unescape(nil, []byte(`\xAb\xcD`))
	require.NoError(t, err)
	require.Equal(t, "\xab\xcd", string(b))
}

func TestJSONDecoderAcceptsJSON(t *testing.T) {
	var d jsonDecoder
	for line, want := range map[string][2]string{
		` { "key" : "a\/b" ,  "value":"\u00e9\ud83d\ude00\"\\\b\f\n\r\t" } `: {"a/b", "é😀\"\\\b\f\n\r\t"},
		`{"value_b64":"AAE=","key_b64":"/w=="}`:                              {"\xff", "\x00\x01"},
		`{"key":"k","value":""}`:                                             {"k", ""},
	} {
		k, v, err := d.decode([]byte(line))
		require.NoError(t, err, line)
		require.Equal(t, want, [2]string{string(k), string(v)}, line)
	}
	for _, bad := range []string{`{"key":"\ud83d","value":""}`, `{"key":"\u12","value":""}`, `{"key":"a` + "\x01" + `","value":""}`, `[]`, `{}`} {
		_, _, err := d.decode([]byte(bad))
		require.Error(t, err, bad)
	}
}

// FuzzTextForms: every form round-trips arbitrary bytes, the tsv form
// never holds a raw tab or newline, and the JSON form is JSON that
// encoding/json reads back to the same strings.
func FuzzTextForms(f *testing.F) {
	f.Add([]byte("key"), []byte("value"))
	f.Add([]byte("a\tb\\x00"), []byte("\xff\xfe\u2028\x7f\"\\"))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		e := appendEscaped(nil, k)
		require.False(t, bytes.ContainsAny(e, "\t\n\r"))
		require.True(t, utf8.Valid(e))
		back, err := unescape(nil, e)
		require.NoError(t, err)
		require.Equal(t, string(k), string(back))
		if len(k) == 0 {
			return
		}
		for _, b64 := range []bool{false, true} {
			line := appendJSONField([]byte{'{'}, "key", k, b64)
			line = append(appendJSONField(append(line, ','), "value", v, b64), '}')
			var d jsonDecoder
			gk, gv, err := d.decode(line)
			require.NoError(t, err, "%s", line)
			require.Equal(t, string(k), string(gk))
			require.Equal(t, string(v), string(gv))
			var m map[string]string
			require.NoError(t, json.Unmarshal(line, &m), "%s", line)
		}
		var l loader
		hk, hv, err := l.parseHex(append(append(appendHex(nil, k), '\t'), appendHex(nil, v)...))
		require.NoError(t, err)
		require.Equal(t, string(k), string(hk))
		require.Equal(t, string(v), string(hv))
	})
}

const benchPairs = 1_000_000

func thinPair(i int) (k, v string) {
	return fmt.Sprintf("k%015d", uint64(i)*2654435761%1_000_000_000_000_007), fmt.Sprintf("v%07d", i%10_000_000)
}

// BenchmarkLoad measures load of thin records (16-byte keys, 8-byte
// values) from a tsv file; BenchmarkBatchedPuts is the baseline: the same
// pairs put in batches of 1000 by a Go program.
func BenchmarkLoad(b *testing.B) {
	file := filepath.Join(b.TempDir(), "thin.tsv")
	f, err := os.Create(file)
	require.NoError(b, err)
	w := bufio.NewWriter(f)
	for i := range benchPairs {
		k, v := thinPair(i)
		fmt.Fprintf(w, "%s\t%s\n", k, v)
	}
	require.NoError(b, w.Flush())
	require.NoError(b, f.Close())
	b.ResetTimer()
	for i := range b.N {
		dst := filepath.Join(b.TempDir(), fmt.Sprint(i))
		mustRun(b, "load", "--create", "--quiet", dst, file)
	}
	b.ReportMetric(float64(benchPairs)*float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

func BenchmarkBatchedPuts(b *testing.B) {
	keys, vals := make([][]byte, benchPairs), make([][]byte, benchPairs)
	for i := range benchPairs {
		k, v := thinPair(i)
		keys[i], vals[i] = []byte(k), []byte(v)
	}
	b.ResetTimer()
	for i := range b.N {
		db, err := engine.Open(filepath.Join(b.TempDir(), fmt.Sprint(i)), &engine.Options{Sync: engine.SyncNone})
		require.NoError(b, err)
		var batch engine.Batch
		for j := range benchPairs {
			batch.Put(keys[j], vals[j])
			if batch.Len() == 1000 {
				require.NoError(b, db.Write(&batch))
				batch.Reset()
			}
		}
		require.NoError(b, db.Write(&batch))
		require.NoError(b, db.Sync())
		require.NoError(b, db.Close())
	}
	b.ReportMetric(float64(benchPairs)*float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

func timeAgo(sec int) time.Time { return time.Now().Add(-time.Duration(sec) * time.Second) }

func TestPutFromStdinAndMissingInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	r := marlinStdin(t, "\x00binary\nvalue", "put", "--create", dir, "k", "-")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, map[string]string{"k": "\x00binary\nvalue"}, readPairs(t, dir))
	r = mustRun(t, "get", "--raw", dir, "k")
	require.Equal(t, "\x00binary\nvalue", r.stdout)

	fresh := filepath.Join(t.TempDir(), "fresh")
	r = marlin(t, "load", "--create", fresh, filepath.Join(t.TempDir(), "missing.tsv"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "no such file")
	require.NoDirExists(t, fresh)
}

// TestLoadDetectsTSVWithBraceKey: a tsv file whose first key starts with
// '{' (a dump of random keys can start so) is tsv, not broken jsonl; a
// first line that is a JSON object without a tab is still jsonl, with
// jsonl's errors.
func TestLoadDetectsTSVWithBraceKey(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "in")
	require.NoError(t, os.WriteFile(file, []byte("{odd key\tv1\nplain\tv2\n{\"key\":\"a\",\"value\":\"1\"}\tv3\n"), 0o644))
	dst := filepath.Join(root, "db")
	mustRun(t, "load", "--create", "--quiet", dst, file)
	require.Equal(t, map[string]string{"{odd key": "v1", "plain": "v2", `{"key":"a","value":"1"}`: "v3"}, readPairs(t, dst))

	bad := filepath.Join(root, "bad")
	require.NoError(t, os.WriteFile(bad, []byte(`{"key":"a","value":1}`+"\n"), 0o644))
	r := marlin(t, "load", "--create", "--quiet", filepath.Join(root, "db2"), bad)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "want a string")
}

// TestLoadHexNeedsSaying: a hex dump loaded without --format was once
// loaded as tsv (hex text as keys, which get then never found). Now a
// file named .hex is hex, and a first line that reads as both hex and tsv
// is refused with a message naming --format.
func TestLoadHexNeedsSaying(t *testing.T) {
	src := makeFixture(t)
	want := readPairs(t, src)
	out := mustRun(t, "dump", "--format", "hex", src).stdout
	root := t.TempDir()
	plain := filepath.Join(root, "pairs")
	named := filepath.Join(root, "dump.hex")
	require.NoError(t, os.WriteFile(plain, []byte(out), 0o644))
	require.NoError(t, os.WriteFile(named, []byte(out), 0o644))

	r := marlin(t, "load", "--create", "--quiet", filepath.Join(root, "db1"), plain)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "say --format hex or --format tsv")
	r = marlinStdin(t, out, "load", "--create", "--quiet", filepath.Join(root, "db2"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "stdin: cannot tell the format")

	dst := filepath.Join(root, "db3")
	mustRun(t, "load", "--create", "--quiet", dst, named)
	require.Equal(t, want, readPairs(t, dst), "a .hex file is hex")
	dst = filepath.Join(root, "db4")
	mustRun(t, "load", "--create", "--quiet", "--format", "tsv", dst, plain)
	require.Contains(t, readPairs(t, dst), "616c706861", "--format tsv takes hex text as keys when asked to")
}

// TestWritesRefuseMistypedDir: put and load on a path that holds no
// database refuse (naming --create) and create nothing; with --create
// they make one.
func TestWritesRefuseMistypedDir(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	input := filepath.Join(root, "in.tsv")
	require.NoError(t, os.WriteFile(input, []byte("k\tv\n"), 0o644))
	for _, dir := range []string{filepath.Join(root, "typo"), empty} {
		for _, args := range [][]string{{"put", dir, "k", "v"}, {"load", "--quiet", dir, input}} {
			r := marlin(t, args...)
			require.Equal(t, 1, r.code, args)
			require.Contains(t, r.stderr, "give --create", args)
		}
	}
	_, err := os.Stat(filepath.Join(root, "typo"))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing created")
	ents, err := os.ReadDir(empty)
	require.NoError(t, err)
	require.Empty(t, ents, "nothing written")

	mustRun(t, "put", "--create", filepath.Join(root, "new1"), "k", "v")
	mustRun(t, "load", "--create", "--quiet", filepath.Join(root, "new2"), input)
	for _, d := range []string{"new1", "new2"} {
		require.Equal(t, map[string]string{"k": "v"}, readPairs(t, filepath.Join(root, d)))
	}
	mustRun(t, "put", filepath.Join(root, "new1"), "k2", "v2") // an existing database needs no --create
}

// TestDumpLoadKeepsTTL: a key's expiry goes through every dump format and
// back (sessions once stopped expiring after a round trip); a pair whose
// expiry passed meanwhile is skipped and counted; --bulk refuses TTLs.
func TestDumpLoadKeepsTTL(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	mustRun(t, "put", "--create", src, "plain", "p")
	mustRun(t, "put", "--ttl", "2h", src, "session", "s")
	mustRun(t, "put", "--escaped", "--ttl", "1h", src, `bin\x00key`, `v\tw`)
	for _, f := range []string{"tsv", "jsonl", "hex"} {
		t.Run(f, func(t *testing.T) {
			out := mustRun(t, "dump", "--format", f, src).stdout
			require.Equal(t, 2, strings.Count(out, "T"), "two expiries in %q", out) // RFC 3339's T, one per TTL key
			file := filepath.Join(t.TempDir(), "pairs."+f)
			require.NoError(t, os.WriteFile(file, []byte(out), 0o644))
			dst := filepath.Join(t.TempDir(), "dst")
			mustRun(t, "load", "--create", "--quiet", dst, file)
			require.Equal(t, readPairs(t, src), readPairs(t, dst))
			for key, want := range map[string]string{"plain": "-1", "session": "7199", `bin\x00key`: "3599"} {
				got := strings.TrimSpace(mustRun(t, "ttl", "--escaped", "--seconds", dst, key).stdout)
				if want == "-1" {
					require.Equal(t, want, got, key)
					continue
				}
				g, err := strconv.Atoi(got)
				require.NoError(t, err)
				w, _ := strconv.Atoi(want)
				require.InDelta(t, w, g, 5, "%s keeps its expiry", key)
			}
		})
	}

	old := filepath.Join(root, "old.tsv")
	require.NoError(t, os.WriteFile(old, []byte("gone\tv\t2001-01-01T00:00:00.000Z\nkept\tv\t2999-01-01T00:00:00Z\n"), 0o644))
	dst := filepath.Join(root, "dst-old")
	r := mustRun(t, "load", "--create", "--quiet", dst, old)
	require.Contains(t, r.stdout, "(and skipped 1 pair whose expiry had passed)")
	require.Equal(t, map[string]string{"kept": "v"}, readPairs(t, dst))

	r = marlin(t, "load", "--create", "--bulk", "--quiet", filepath.Join(root, "bulk"), old)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "take no TTLs")
	bad := filepath.Join(root, "bad.tsv")
	require.NoError(t, os.WriteFile(bad, []byte("k\tv\tsoon\n"), 0o644))
	r = marlin(t, "load", "--create", "--quiet", filepath.Join(root, "bad"), bad)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "third field: want an expiry")
}
