package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTTLExistsKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	mustRun(t, "put", "--create", dir, "user:1", "a")
	mustRun(t, "put", "--ttl", "1h", dir, "session:9", "b")
	mustRun(t, "put", "--escaped", dir, `user:\x00bin`, "c")
	mustRun(t, "put", dir, "other", "d")

	r := mustRun(t, "ttl", dir, "user:1")
	require.Equal(t, "no expiry\n", r.stdout)
	r = mustRun(t, "ttl", "--seconds", dir, "user:1")
	require.Equal(t, "-1\n", r.stdout)
	r = mustRun(t, "ttl", dir, "session:9")
	require.Regexp(t, `^(59m5\ds|1h0m0s) \(at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\n$`, r.stdout)
	r = mustRun(t, "ttl", "--seconds", dir, "session:9")
	require.Regexp(t, `^35\d\d\n$`, r.stdout)
	r = marlin(t, "ttl", dir, "nope")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `key "nope" not found`)

	r = mustRun(t, "exists", dir, "user:1", "other")
	require.Equal(t, "2\n", r.stdout)
	r = marlin(t, "exists", dir, "user:1", "nope", "other")
	require.Equal(t, 1, r.code)
	require.Equal(t, "2\n", r.stdout)
	require.Empty(t, r.stderr)
	r = marlin(t, "exists", "--quiet", dir, "nope")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)

	keys := func(args ...string) []string {
		out := mustRun(t, append([]string{"keys"}, append(args, dir)...)...).stdout
		l := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if out == "" {
			return nil
		}
		return l
	}
	require.ElementsMatch(t, []string{"user:1", "session:9", `user:\x00bin`, "other"}, keys())
	require.ElementsMatch(t, []string{"user:1", `user:\x00bin`}, keys("--match", "user:*"))
	require.ElementsMatch(t, []string{"user:1"}, keys("--match", "user:?"))
	require.ElementsMatch(t, []string{"user:1", "other"}, keys("--match", "[ou][st]*[^n]"))
	require.Len(t, keys("--limit", "2"), 2)
	require.Empty(t, keys("--match", "x*"))
	r = marlin(t, "keys", "--match", "[ab", dir)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "without its ]")
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abcd", false},
		{"?", "", false}, {"?", "x", true}, {"a?c", "abc", true}, {"*a*b*", "xaybz", true},
		{"*a*b*", "xbya", false}, {"[a-c]x", "bx", true}, {"[a-c]x", "dx", false},
		{"[^a-c]x", "dx", true}, {"[]]", "]", true}, {`\*`, "*", true}, {`\*`, "a", false},
		{"a/b*", "a/b/c", true}, {"**", "anything", true}, {"*x", strings.Repeat("a", 10000), false},
	} {
		require.NoError(t, checkGlob([]byte(c.p)))
		require.Equal(t, c.want, globMatch([]byte(c.p), []byte(c.s)), "%q %q", c.p, c.s)
	}
	for _, bad := range []string{"[abc", `abc\`, "[^"} {
		require.Error(t, checkGlob([]byte(bad)), bad)
	}
}

// TestErrorStyle: one prefix per message, the same words for the same
// mistake, and a flag that does nothing is refused.
func TestErrorStyle(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "db")
	mustRun(t, "put", "--create", dir, "a", "b")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"delete", dir, ""}, "marlin delete: empty key\n"},
		{[]string{"put", dir, "", "v"}, "marlin put: empty key\n"},
		{[]string{"dump", "--base64", dir}, "marlin dump: --base64 applies to --format jsonl only"},
		{[]string{"checkpoint", dir, root}, "marlin checkpoint: " + root + " is not empty: give a new or empty directory\n"},
	} {
		r := marlin(t, c.args...)
		require.Equal(t, 1, r.code, c.args)
		require.True(t, strings.HasPrefix(r.stderr, c.want), "%q: %q", c.args, r.stderr)
		require.Equal(t, 1, strings.Count(r.stderr, "marlin "), "one prefix: %q", r.stderr)
	}
}

func TestGetMany(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	mustRun(t, "put", "--create", dir, "a", "1")
	mustRun(t, "put", "--ttl", "1h", dir, "b", "two\twords")
	r := mustRun(t, "get", dir, "a", "b")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 2)
	require.Equal(t, "a\t1", lines[0])
	require.Regexp(t, `^b\ttwo\\twords\t\d{4}-\d\d-\d\dT`, lines[1], "dump's line, with the expiry")
	r = marlin(t, "get", dir, "a", "nope", "b")
	require.Equal(t, 1, r.code)
	require.Equal(t, 2, strings.Count(r.stdout, "\n"))
	require.Equal(t, "marlin get: key \"nope\" not found\n", r.stderr)
	r = mustRun(t, "get", "--hex", dir, "61", "62")
	require.True(t, strings.HasPrefix(r.stdout, "61\t31\n62\t"), r.stdout)
	r = marlin(t, "get", "--raw", dir, "a", "b")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "apply to one KEY")
}
