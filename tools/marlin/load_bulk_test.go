package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestLoadBulkMatchesLoad: --bulk and the batched load give the same
// pairs for input with repeated keys (the last one wins), from several
// files and stdin, and the result verifies clean and takes writes.
func TestLoadBulkMatchesLoad(t *testing.T) {
	root := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 1))
	var files []string
	var all strings.Builder
	for f := range 3 {
		var b strings.Builder
		for range 20000 {
			fmt.Fprintf(&b, "k%05d\tv%d\n", rnd.IntN(30000), rnd.IntN(1<<30))
		}
		name := filepath.Join(root, fmt.Sprintf("in%d.tsv", f))
		require.NoError(t, os.WriteFile(name, []byte(b.String()), 0o644))
		files = append(files, name)
		all.WriteString(b.String())
	}
	plain := filepath.Join(root, "plain")
	mustRun(t, append([]string{"load", "--create", "--quiet", plain}, files...)...)
	want := readPairs(t, plain)

	bulk := filepath.Join(root, "bulk")
	r := mustRun(t, append([]string{"load", "--create", "--bulk", "--segment-size", "262144", bulk}, files...)...)
	require.Contains(t, r.stdout, "loaded 60,000 pairs from 3 files")
	require.Contains(t, r.stdout, fmt.Sprintf("it holds %s keys", comma(int64(len(want)))))
	require.Contains(t, r.stderr, "load --bulk: log ")
	require.Equal(t, want, readPairs(t, bulk))
	mustRun(t, "verify", bulk)

	stdinDB := filepath.Join(root, "stdin")
	r = marlinStdin(t, all.String(), "load", "--create", "--bulk", "--quiet", stdinDB)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, want, readPairs(t, stdinDB))

	mustRun(t, "put", "--create", bulk, "k00001", "new")
	want["k00001"] = "new"
	require.Equal(t, want, readPairs(t, bulk))
}

// TestLoadBulkAllOrNothing: a malformed line, a non-empty target and a
// write error each leave no database behind (the batched load would have
// loaded the lines before the bad one).
func TestLoadBulkAllOrNothing(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "bad.tsv")
	require.NoError(t, os.WriteFile(file, []byte(strings.Repeat("a\tb\n", 1000)+"no tab here\n"), 0o644))
	dst := filepath.Join(root, "db")
	r := marlin(t, "load", "--create", "--bulk", "--quiet", dst, file)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "bad.tsv:1001: no tab between key and value")
	require.Contains(t, r.stderr, "nothing was loaded")
	names, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Len(t, names, 1, "only the input is left: %v", names)

	existing := filepath.Join(root, "existing")
	mustRun(t, "put", "--create", existing, "keep", "me")
	good := writeInput(t, root, 100, 10)
	r = marlin(t, "load", "--create", "--bulk", "--quiet", existing, good)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "not empty")
	require.Equal(t, map[string]string{"keep": "me"}, readPairs(t, existing))

	loadFS = vfs.NewErrorFS(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if _, ok := segment.ParseFileName(filepath.Base(name)); ok && op == vfs.OpSync {
			return errors.New("injected fsync error")
		}
		return nil
	}))
	defer func() { loadFS = nil }()
	big := writeInput(t, t.TempDir(), 50000, 100)
	r = marlin(t, "load", "--create", "--bulk", "--quiet", "--segment-size", "1048576", dst, big)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "injected fsync error")
	_, err = os.Stat(dst)
	require.True(t, os.IsNotExist(err), "no database published")
	loadFS = nil
	r = mustRun(t, "load", "--create", "--bulk", "--quiet", dst, big)
	require.Contains(t, r.stdout, "loaded 50,000 pairs")
	db, err := engine.Open(dst, &engine.Options{ReadOnly: true})
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(50000), st.Keys)
	require.NoError(t, db.Close())
}
