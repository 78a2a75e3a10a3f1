package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestLoadSmallSegments: batches are sized from the segment size. Before
// the fix a fixed 4 MiB bound made every batch of 1000 100-byte pairs too
// large for a 64 KiB segment: "batch too large for one segment (0 pairs
// loaded)".
func TestLoadSmallSegments(t *testing.T) {
	root := t.TempDir()
	file := writeInput(t, root, 5000, 100)
	dst := filepath.Join(root, "db")
	r := mustRun(t, "load", "--create", "--quiet", "--segment-size", "65536", dst, file)
	require.Contains(t, r.stdout, "loaded 5,000 pairs")
	got := readPairs(t, dst)
	require.Len(t, got, 5000)
	require.Equal(t, strings.Repeat("v", 100), got["key-004999"])
	// A segment barely larger than one pair still works (one pair a batch).
	dst2 := filepath.Join(root, "db2")
	mustRun(t, "load", "--create", "--quiet", "--segment-size", "4096", dst2, file)
	require.Len(t, readPairs(t, dst2), 5000)
}

// TestLoadWriteErrorReportsDurable: every segment write fails once two
// segment syncs with writes before them have succeeded (the first covers
// a new segment's header, the second pairs). The count load prints must
// be of durable pairs: all of them are in the directory afterwards.
// Before the fix it printed the pairs handed to the engine (still in its
// write buffer, never written), skipped Sync and ignored Close's error.
// (The failure once came after the first two writes, which a loaded
// machine's timed buffer flushes could use up before any sync: a flaky
// test.)
func TestLoadWriteErrorReportsDurable(t *testing.T) {
	root := t.TempDir()
	file := writeInput(t, root, 20000, 100)
	dst := filepath.Join(root, "db")
	var mu sync.Mutex
	wrote, syncs := false, 0
	loadFS = vfs.NewErrorFS(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if _, ok := segment.ParseFileName(filepath.Base(name)); !ok {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op == vfs.OpWrite && syncs >= 2:
			return errors.New("injected write error")
		case op == vfs.OpWrite:
			wrote = true
		case op == vfs.OpSync && wrote:
			syncs++
			wrote = false
		}
		return nil
	}))
	oldEvery := syncEvery
	syncEvery = 200 << 10
	defer func() { loadFS, syncEvery = nil, oldEvery }()

	r := marlin(t, "load", "--create", "--quiet", "--batch", "500", dst, file)
	require.Equal(t, 1, r.code, r.stdout)
	require.Contains(t, r.stderr, "injected write error")
	m := regexp.MustCompile(`\(([0-9,]+) pairs? (?:durable|loaded before)`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r.stderr)
	n, err := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	require.NoError(t, err)
	require.Positive(t, n, "some Sync succeeded before the writes failed")
	loadFS = nil
	got := readPairs(t, dst)
	for i := range n {
		if _, ok := got[fmt.Sprintf("key-%06d", i)]; !ok {
			t.Fatalf("key-%06d reported durable but missing", i)
		}
	}
}
