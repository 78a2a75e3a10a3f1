package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// transcript runs the command and renders what it printed and its exit
// status, normalized, for a golden file.
func transcript(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := marlin(t, args...)
	var b strings.Builder
	fmt.Fprintf(&b, "$ marlin %s\n", strings.Join(args, " "))
	b.WriteString(r.stdout)
	if r.stdout != "" && !strings.HasSuffix(r.stdout, "\n") {
		b.WriteString("\n--- no newline at the end of stdout\n")
	}
	if r.stderr != "" {
		fmt.Fprintf(&b, "--- stderr\n%s", r.stderr)
	}
	fmt.Fprintf(&b, "--- exit %d\n", r.code)
	return normalize(b.String(), dir)
}

// TestGolden runs each subcommand on the fixture directory and compares
// the output with testdata/golden/*.txt. Regenerate with
//
//	go test ./tools/marlin -run Golden -update
func TestGolden(t *testing.T) {
	base := makeFixture(t)
	root := filepath.Dir(base)
	segs := segFiles(t, base)
	require.Greater(t, len(segs), 3, "the fixture should span several segments")
	cases := []struct {
		name string
		args []string
	}{
		{"inspect", []string{"inspect", base}},
		{"inspect-json", []string{"inspect", "--json", base}},
		{"dump", []string{"dump", base}},
		{"dump-sorted", []string{"dump", "--sort", base}},
		{"dump-jsonl", []string{"dump", "--sort", "--format", "jsonl", base}},
		{"dump-jsonl-base64", []string{"dump", "--sort", "--format", "jsonl", "--base64", "--prefix", "user:", base}},
		{"dump-hex", []string{"dump", "--sort", "--format", "hex", base}},
		{"dump-keys-only", []string{"dump", "--sort", "--keys-only", base}},
		{"dump-prefix", []string{"dump", base, "--sort", "--prefix", `bin\x00`}},
		{"dump-records-first", []string{"dump", "--records", segs[0]}},
		{"dump-records-last", []string{"dump", "--records", segs[len(segs)-1]}},
		{"verify", []string{"verify", base}},
		{"get", []string{"get", base, "beta"}},
		{"get-escaped", []string{"get", "--escaped", "--escaped-value", base, `tab\tkey`}},
		{"get-piped", []string{"get", "--escaped", base, `tab\tkey`}},
		{"get-hex", []string{"get", "--hex", base, "62696e0001ff"}},
		{"get-raw", []string{"get", "--raw", base, "naïve"}},
		{"get-missing", []string{"get", base, "deleted"}},
		{"get-ttl", []string{"get", base, "ttl-far-future"}},
		{"usage", []string{"help"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			golden(t, c.name, transcript(t, root, c.args...))
		})
	}
	for _, name := range []string{"inspect", "dump", "verify", "get", "put", "delete", "load", "compact", "checkpoint"} {
		t.Run("help-"+name, func(t *testing.T) {
			out := transcript(t, root, name, "--help")
			require.Contains(t, out, "example:\n  marlin "+name)
			golden(t, "help-"+name, out)
		})
	}
}

// TestGoldenWrites covers the commands that modify a directory, each on a
// fresh fixture.
func TestGoldenWrites(t *testing.T) {
	cases := []struct {
		name  string
		steps [][]string // DIR is replaced by the fixture directory, DEST by a new path
	}{
		{"put-get-delete", [][]string{
			{"put", "--create", "DIR", "new", "value"},
			{"get", "DIR", "new"},
			{"put", "--create", "--escaped", "DIR", `k\x00`, `v\tw`},
			{"get", "--hex", "DIR", "6b00"},
			{"put", "--create", "--ttl", "1h", "DIR", "beta", "replaced"},
			{"get", "DIR", "beta"},
			{"delete", "DIR", "new"},
			{"get", "DIR", "new"},
			{"delete", "DIR", "never-there"},
			{"put", "--create", "DIR", "x"},
			{"put", "--create", "DIR", "", "empty key"},
		}},
		{"compact", [][]string{
			{"compact", "DIR"},
			{"verify", "DIR"},
			{"dump", "--sort", "--prefix", "user:", "DIR"},
		}},
		{"checkpoint", [][]string{
			{"checkpoint", "DIR", "DEST"},
			{"verify", "DEST"},
			{"dump", "--sort", "--prefix", "user:", "DEST"},
			{"checkpoint", "DIR", "DEST"},
			{"checkpoint", "--copy", "DIR", "DEST2"},
			{"verify", "DEST2"},
		}},
		{"dump-skip-corrupt", [][]string{
			{"dump", "--skip-corrupt", "--sort", "--prefix", "user:", "DIR"},
		}},
		{"load", [][]string{
			{"load", "--create", "--quiet", "DIR", "INPUT"},
			{"get", "DIR", "loaded:1"},
			{"get", "DIR", "beta"},
			{"load", "--create", "--quiet", "--dry-run", "DIR", "BAD"},
			{"load", "--create", "--quiet", "DIR", "BAD"},
			{"get", "DIR", "ok-before-bad"},
			{"get", "DIR", "after-bad"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := makeFixture(t)
			root := filepath.Dir(dir)
			dest := filepath.Join(root, "dest")
			dest2 := filepath.Join(root, "dest2")
			input := filepath.Join(root, "input.tsv")
			require.NoError(t, os.WriteFile(input, []byte("loaded:1\tone\nbeta\tfrom load\n\n{not json but tsv\tfine\n"), 0o644))
			bad := filepath.Join(root, "bad.tsv")
			require.NoError(t, os.WriteFile(bad, []byte("ok-before-bad\tyes\nafter-bad\tno\\q\nnever\treached\n"), 0o644))
			var out strings.Builder
			for _, step := range c.steps {
				args := make([]string, len(step))
				for i, a := range step {
					switch a {
					case "DIR":
						a = dir
					case "DEST":
						a = dest
					case "DEST2":
						a = dest2
					case "INPUT":
						a = input
					case "BAD":
						a = bad
					}
					args[i] = a
				}
				out.WriteString(transcript(t, root, args...))
			}
			golden(t, c.name, out.String())
		})
	}
}
