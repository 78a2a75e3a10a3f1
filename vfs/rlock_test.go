package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRLock(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T) (FS, string){
		"os": func(t *testing.T) (FS, string) { return Default, t.TempDir() },
		"mem": func(t *testing.T) (FS, string) {
			fs := NewMem()
			require.NoError(t, fs.MkdirAll("/d", 0o755))
			return fs, "/d"
		},
	} {
		t.Run(name, func(t *testing.T) {
			fs, dir := mk(t)
			lock := filepath.Join(dir, "LOCK")
			// A missing file: shared lock succeeds without creating it.
			r0, err := fs.RLock(lock)
			require.NoError(t, err)
			_, err = fs.Stat(lock)
			require.True(t, errors.Is(err, os.ErrNotExist), "RLock must not create the file: %v", err)
			require.NoError(t, r0.Close())

			w, err := fs.Lock(lock)
			require.NoError(t, err)
			_, err = fs.RLock(lock)
			require.ErrorIs(t, err, ErrLocked, "shared lock while exclusive is held")
			require.NoError(t, w.Close())

			r1, err := fs.RLock(lock)
			require.NoError(t, err)
			r2, err := fs.RLock(lock)
			require.NoError(t, err, "two shared holders")
			_, err = fs.Lock(lock)
			require.ErrorIs(t, err, ErrLocked, "exclusive lock while shared is held")
			require.NoError(t, r1.Close())
			_, err = fs.Lock(lock)
			require.ErrorIs(t, err, ErrLocked, "one shared holder remains")
			require.NoError(t, r2.Close())
			w, err = fs.Lock(lock)
			require.NoError(t, err)
			require.NoError(t, w.Close())
		})
	}
}
