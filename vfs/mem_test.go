package vfs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func newTestMem(t *testing.T) *MemFS {
	t.Helper()
	fs := NewMem()
	require.NoError(t, fs.MkdirAll("/db", 0o755))
	return fs
}

func exists(t *testing.T, fs FS, name string) bool {
	t.Helper()
	_, err := fs.Stat(name)
	if err != nil {
		require.ErrorIs(t, err, os.ErrNotExist)
		return false
	}
	return true
}

func seed(s uint64) *rand.Rand { return rand.New(rand.NewPCG(s, s)) }

func TestCrashUnsyncedCreateLost(t *testing.T) {
	fs := newTestMem(t)
	writeFile(t, fs, "/db/a", "data") // file synced, directory not
	for _, rnd := range []*rand.Rand{nil, seed(1)} {
		c := fs.CrashClone(rnd)
		require.False(t, exists(t, c, "/db/a"))
		require.True(t, exists(t, c, "/db"), "MkdirAll is durable")
	}
	require.True(t, exists(t, fs, "/db/a"), "original unaffected")

	require.NoError(t, fs.SyncDir("/db"))
	require.Equal(t, "data", readFile(t, fs.CrashClone(nil), "/db/a"))
}

func TestCrashSyncedDataSurvives(t *testing.T) {
	fs := newTestMem(t)
	data := bytes.Repeat([]byte("x"), 10000)
	writeFile(t, fs, "/db/a", string(data))
	require.NoError(t, fs.SyncDir("/db"))
	for s := range uint64(20) {
		require.Equal(t, string(data), readFile(t, fs.CrashClone(seed(s)), "/db/a"))
	}

	// Created and named durably, but data never synced: empty under nil.
	f, err := fs.Create("/db/b")
	require.NoError(t, err)
	_, err = f.Write([]byte("unsynced"))
	require.NoError(t, err)
	require.NoError(t, fs.SyncDir("/db"))
	require.Equal(t, "", readFile(t, fs.CrashClone(nil), "/db/b"))
	require.NoError(t, f.Close())
}

// TestCrashUnsyncedTail checks that every unsynced 4 KiB chunk ends up
// kept, zeroed or dropped (with all after it), never anything else, and
// that a fixed set of seeds reaches each outcome.
func TestCrashUnsyncedTail(t *testing.T) {
	fs := newTestMem(t)
	const synced = 5000 // deliberately not chunk-aligned
	f, err := fs.Create("/db/log")
	require.NoError(t, err)
	data := make([]byte, 5*crashChunk+100)
	for i := range data {
		data[i] = byte(1 + i%251) // no zero bytes
	}
	_, err = f.Write(data[:synced])
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, fs.SyncDir("/db"))
	_, err = f.Write(data[synced:])
	require.NoError(t, err)

	require.Equal(t, string(data[:synced]), readFile(t, fs.CrashClone(nil), "/db/log"))

	var full, zeroed, dropped, droppedAll bool
	for s := range uint64(50) {
		got := []byte(readFile(t, fs.CrashClone(seed(s)), "/db/log"))
		require.GreaterOrEqual(t, len(got), synced)
		require.Equal(t, data[:synced], got[:synced], "synced prefix intact")
		if len(got) < len(data) {
			require.True(t, len(got) == synced || len(got)%crashChunk == 0, "drops happen at chunk boundaries")
			dropped = true
			droppedAll = droppedAll || len(got) == synced
		} else {
			full = true
		}
		for off := synced; off < len(got); {
			end := min((off/crashChunk+1)*crashChunk, len(got))
			chunk := got[off:end]
			if !bytes.Equal(chunk, data[off:end]) {
				require.Equal(t, make([]byte, end-off), chunk, "chunk at %d neither kept nor zeroed", off)
				zeroed = true
			}
			off = end
		}
	}
	require.True(t, full && zeroed && dropped && droppedAll, "full=%v zeroed=%v dropped=%v droppedAll=%v", full, zeroed, dropped, droppedAll)

	// The same seed gives the same crash.
	a := readFile(t, fs.CrashClone(seed(7)), "/db/log")
	b := readFile(t, fs.CrashClone(seed(7)), "/db/log")
	require.Equal(t, a, b)
	require.NoError(t, f.Close())
}

func TestCrashUnsyncedTruncate(t *testing.T) {
	fs := newTestMem(t)
	data := string(bytes.Repeat([]byte("y"), 3*crashChunk))
	writeFile(t, fs, "/db/a", data)
	require.NoError(t, fs.SyncDir("/db"))
	f, err := fs.OpenReadWrite("/db/a")
	require.NoError(t, err)
	require.NoError(t, f.Truncate(100))
	_, err = f.Write([]byte("zz"))
	require.NoError(t, err)

	require.Equal(t, data, readFile(t, fs.CrashClone(nil), "/db/a"))
	outcomes := map[string]bool{}
	for s := range uint64(30) {
		got := readFile(t, fs.CrashClone(seed(s)), "/db/a")
		switch got {
		case data, data[:100], data[:100] + "zz", data[:100] + "\x00\x00":
			outcomes[fmt.Sprint(len(got), got[len(got)-1])] = true
		default:
			t.Fatalf("unexpected crash contents of length %d", len(got))
		}
	}
	require.Len(t, outcomes, 4)

	require.NoError(t, f.Sync())
	require.Equal(t, data[:100]+"zz", readFile(t, fs.CrashClone(seed(1)), "/db/a"))
	require.NoError(t, f.Close())
}

func TestCrashRenameAndRemoveRevert(t *testing.T) {
	fs := newTestMem(t)
	writeFile(t, fs, "/db/a", "A")
	writeFile(t, fs, "/db/gone", "G")
	require.NoError(t, fs.SyncDir("/db"))

	require.NoError(t, fs.Rename("/db/a", "/db/b"))
	require.NoError(t, fs.Remove("/db/gone"))
	c := fs.CrashClone(nil)
	require.Equal(t, "A", readFile(t, c, "/db/a"))
	require.False(t, exists(t, c, "/db/b"))
	require.Equal(t, "G", readFile(t, c, "/db/gone"))

	require.NoError(t, fs.SyncDir("/db"))
	c = fs.CrashClone(nil)
	require.False(t, exists(t, c, "/db/a"))
	require.Equal(t, "A", readFile(t, c, "/db/b"))
	require.False(t, exists(t, c, "/db/gone"))
}

func TestCrashCloneIndependent(t *testing.T) {
	fs := newTestMem(t)
	writeFile(t, fs, "/db/a", "A")
	require.NoError(t, fs.Link("/db/a", "/db/b"))
	require.NoError(t, fs.SyncDir("/db"))
	l, err := fs.Lock("/db/LOCK")
	require.NoError(t, err)
	defer l.Close()

	c := fs.CrashClone(nil)
	cl, err := c.Lock("/db/LOCK")
	require.NoError(t, err, "locks are not carried over")
	require.NoError(t, cl.Close())

	// Hard links stay shared in the clone, and the clone is separate.
	f, err := c.OpenReadWrite("/db/a")
	require.NoError(t, err)
	_, err = f.Write([]byte("+"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "A+", readFile(t, c, "/db/b"))
	require.Equal(t, "A", readFile(t, fs, "/db/b"))
	writeFile(t, c, "/db/new", "n")
	require.False(t, exists(t, fs, "/db/new"))

	// Clones start fully durable: cloning again loses nothing synced.
	require.NoError(t, c.SyncDir("/db"))
	require.Equal(t, "A", readFile(t, c.CrashClone(nil), "/db/a"), "unsynced append lost")
}

func TestCrashDirectoryRenameCycle(t *testing.T) {
	// A directory moved under a sibling that was itself moved, with only
	// some directories synced, leaves a cycle in the synced entries
	// (/a/b/a/...). The clone keeps each directory once, at the first
	// place a sorted walk reaches it.
	fs := NewMem()
	require.NoError(t, fs.MkdirAll("/a/b", 0o755))
	require.NoError(t, fs.Rename("/a/b", "/b"))
	require.NoError(t, fs.SyncDir("/"))
	require.NoError(t, fs.Rename("/a", "/b/a"))
	require.NoError(t, fs.SyncDir("/b"))
	c := fs.CrashClone(nil)
	require.True(t, exists(t, c, "/a/b"))
	require.False(t, exists(t, c, "/a/b/a"))
	require.False(t, exists(t, c, "/b"))
	require.Equal(t, "/a/\n/a/b/\n", c.String())
}

func TestMemMapTruncateZeroes(t *testing.T) {
	fs := newTestMem(t)
	f, err := fs.Create("/db/a")
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Write([]byte("abcdef"))
	require.NoError(t, err)
	m, err := f.Map(64)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(2))
	require.Equal(t, "ab\x00\x00\x00\x00", string(m.Bytes()[:6]))
	_, err = f.Write([]byte("XY"))
	require.NoError(t, err)
	require.Equal(t, "abXY\x00\x00", string(m.Bytes()[:6]))
	require.NoError(t, m.Close())
	require.Nil(t, m.Bytes())
}

func TestMemClosedFile(t *testing.T) {
	fs := newTestMem(t)
	f, err := fs.Create("/db/a")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = f.Write([]byte("x"))
	require.ErrorIs(t, err, os.ErrClosed)
	require.ErrorIs(t, f.Sync(), os.ErrClosed)
	_, err = f.Map(10)
	require.ErrorIs(t, err, os.ErrClosed)
}

func TestMemRenameErrors(t *testing.T) {
	fs := newTestMem(t)
	require.NoError(t, fs.MkdirAll("/db/d/e", 0o755))
	writeFile(t, fs, "/db/f", "f")
	require.Error(t, fs.Rename("/db/d", "/db/d/e/x"), "into own subtree")
	require.Error(t, fs.Rename("/db/f", "/db/d"), "file over dir")
	require.Error(t, fs.Rename("/db/d", "/db/f"), "dir over file")
	require.NoError(t, fs.Rename("/db/f", "/db/f"))
	require.NoError(t, fs.Rename("/db/d", "/db/d2"))
	require.True(t, exists(t, fs, "/db/d2/e"))
	require.True(t, exists(t, fs, "db/d2/e"), "relative names share the namespace")
}

// TestMemConcurrentReadWrite is meant for -race: readers and a writer on
// one file, plus a mapping reader that only reads published bytes.
func TestMemConcurrentReadWrite(t *testing.T) {
	fs := newTestMem(t)
	w, err := fs.Create("/db/a")
	require.NoError(t, err)
	defer w.Close()
	const total = 1 << 14
	m, err := w.Map(total)
	require.NoError(t, err)
	defer m.Close()

	published := make(chan int, total/64)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(published)
		chunk := bytes.Repeat([]byte{7}, 64)
		for size := 0; size < total; size += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				t.Error(err)
				return
			}
			published <- size + len(chunk)
		}
	})
	wg.Go(func() {
		for size := range published {
			if b := m.Bytes(); b[size-1] != 7 {
				t.Errorf("view misses byte %d", size-1)
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			r, err := fs.Open("/db/a")
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			buf := make([]byte, 256)
			for range 200 {
				size, _ := r.Size()
				n, _ := r.ReadAt(buf, max(size-256, 0))
				if bytes.IndexFunc(buf[:n], func(r rune) bool { return r != 7 }) >= 0 {
					t.Error("read unwritten bytes")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestMemStatWhileWriting: Stat of a file another goroutine writes is safe
// (the race detector caught Stat reading a file's modTime unlocked).
func TestMemStatWhileWriting(t *testing.T) {
	fs := NewMem()
	f, err := fs.Create("/f")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			_, _ = f.Write([]byte("x"))
		}
	}()
	var last int64
	for range 1000 {
		fi, err := fs.Stat("/f")
		require.NoError(t, err)
		require.GreaterOrEqual(t, fi.Size(), last)
		last = fi.Size()
	}
	<-done
	fi, err := fs.Stat("/f")
	require.NoError(t, err)
	require.Equal(t, int64(1000), fi.Size())
	require.NoError(t, f.Close())
}
