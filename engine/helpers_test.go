package engine

import (
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// Helpers shared by the engine's tests.

// readFile returns the contents of file name.
func readFile(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	require.NoError(t, err)
	defer f.Close()
	n, err := f.Size()
	require.NoError(t, err)
	b := make([]byte, n)
	if n > 0 {
		_, err = f.ReadAt(b, 0)
		require.NoError(t, err)
	}
	return b
}

// writeFile replaces (or creates) file name with b, durably.
func writeFile(t *testing.T, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.Create(name)
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	require.NoError(t, fs.SyncDir(filepath.Dir(name)))
}

// snapshotFiles returns the names of the snapshot files in /db, sorted.
func snapshotFiles(t *testing.T, fs vfs.FS) []string { return snapshotFilesIn(t, fs, "/db") }

// snapshotFilesIn returns the names of the snapshot files in dir, sorted.
func snapshotFilesIn(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	var out []string
	for _, n := range names {
		if _, ok := parseSnapName(n); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// deleteSnapshots removes every snapshot file of dir (as after a crash
// before any was written).
func deleteSnapshots(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	for _, n := range snapshotFilesIn(t, fs, dir) {
		require.NoError(t, fs.Remove(filepath.Join(dir, n)))
	}
}

// requireVerifyOK asserts that Verify finds nothing wrong in dir.
func requireVerifyOK(t *testing.T, dir string, o *Options) {
	t.Helper()
	rep, err := Verify(dir, o)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)
}

// putUntilRoll calls put(0), put(1), ... until the active segment of db
// changes (a roll).
func putUntilRoll(t *testing.T, db *DB, put func(i int) error) {
	t.Helper()
	db.mu.Lock()
	first := db.active
	db.mu.Unlock()
	for i := 0; ; i++ {
		db.mu.Lock()
		rolled := db.active != first
		db.mu.Unlock()
		if rolled {
			return
		}
		require.NoError(t, put(i))
	}
}
