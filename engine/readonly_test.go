package engine

import (
	iofs "io/fs"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

func TestReadOnly(t *testing.T) {
	for _, name := range []string{"mem", "os"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir := "/db"
			if name == "os" {
				fs, dir = vfs.Default, t.TempDir()
			}
			o := testOpts(fs)
			db, err := Open(dir, o)
			require.NoError(t, err)
			require.NoError(t, db.Put([]byte("a"), []byte("1")))
			require.NoError(t, db.Put([]byte("b"), []byte("2")))
			require.NoError(t, db.Delete([]byte("b")))

			ro := *o
			ro.ReadOnly = true
			_, err = Open(dir, &ro)
			require.ErrorIs(t, err, ErrLocked, "read-only open while a writer has it")
			require.NoError(t, db.Close())

			before := listSizes(t, fs, dir)
			r1, err := Open(dir, &ro)
			require.NoError(t, err)
			r2, err := Open(dir, &ro)
			require.NoError(t, err, "two read-only opens at once")
			_, err = Open(dir, o)
			require.ErrorIs(t, err, ErrLocked, "a writer while readers have it")
			for _, r := range []*DB{r1, r2} {
				v, err := r.Get([]byte("a"))
				require.NoError(t, err)
				require.Equal(t, "1", string(v))
				_, err = r.Get([]byte("b"))
				require.ErrorIs(t, err, ErrNotFound)
				require.ErrorIs(t, r.Put([]byte("c"), nil), ErrReadOnly)
				require.ErrorIs(t, r.Delete([]byte("a")), ErrReadOnly)
				var b Batch
				b.Put([]byte("c"), nil)
				require.ErrorIs(t, r.Write(&b), ErrReadOnly)
				require.ErrorIs(t, r.Sync(), ErrReadOnly)
				require.ErrorIs(t, r.Compact(), ErrReadOnly)
				require.ErrorIs(t, r.Snapshot(), ErrReadOnly)
				require.NoError(t, r.Close())
			}
			require.Equal(t, before, listSizes(t, fs, dir), "read-only opens changed the directory")
			_, err = Open("/no/such/dir", &ro)
			require.Error(t, err)
		})
	}
}

func listSizes(t *testing.T, fs vfs.FS, dir string) map[string]int64 {
	names, err := fs.List(dir)
	require.NoError(t, err)
	m := map[string]int64{}
	for _, n := range names {
		fi, err := fs.Stat(dir + "/" + n)
		require.NoError(t, err)
		m[n] = fi.Size()
	}
	return m
}

// TestReadOnlyOpenWrapsStatError: a read-only Open of a directory it cannot
// stat returns the cause wrapped, so a missing directory is fs.ErrNotExist
// and an injected I/O error is recognizable (a regression: the cause was
// formatted with %v and lost; found by the error sweep).
func TestReadOnlyOpenWrapsStatError(t *testing.T) {
	mem := vfs.NewMem()
	_, err := Open("/missing", &Options{FS: mem, ReadOnly: true, Logger: discardLogger})
	require.ErrorIs(t, err, iofs.ErrNotExist)

	db, err := Open("/db", testOpts(mem))
	require.NoError(t, err)
	require.NoError(t, db.Close())
	fs := vfs.NewErrorFS(mem, vfs.OnKind(vfs.ErrInjectedIO, vfs.OpStat))
	_, err = Open("/db", &Options{FS: fs, ReadOnly: true, Logger: discardLogger})
	require.ErrorIs(t, err, vfs.ErrInjected)
	require.ErrorIs(t, err, syscall.EIO)

	f, err := mem.Create("/file")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = Open("/file", &Options{FS: mem, ReadOnly: true, Logger: discardLogger})
	require.ErrorContains(t, err, "not a directory")
}
