package vfs

import (
	"errors"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// workload does one operation per step, of every kind, and stops at the
// first error. It returns the failed step's number (or -1) and the error.
func workload(fs FS) (int, error) {
	var f File
	var m Mapping
	var l io.Closer
	buf := make([]byte, 4)
	steps := []func() error{
		func() error { return fs.MkdirAll("/db", 0o755) },
		func() (err error) { f, err = fs.Create("/db/a"); return err },
		func() error { _, err := f.Write([]byte("abcd")); return err },
		func() error { _, err := f.ReadAt(buf, 0); return err },
		func() error { return f.Sync() },
		func() error { return f.Truncate(2) },
		func() error { _, err := f.Size(); return err },
		func() (err error) { m, err = f.Map(8); return err },
		func() error { return f.Close() },
		func() error { return fs.SyncDir("/db") },
		func() error { return fs.Rename("/db/a", "/db/b") },
		func() error { return fs.Link("/db/b", "/db/c") },
		func() error { _, err := fs.List("/db"); return err },
		func() error { _, err := fs.Stat("/db/c"); return err },
		func() error { return fs.Remove("/db/c") },
		func() (err error) { l, err = fs.Lock("/db/LOCK"); return err },
		func() (err error) { f, err = fs.OpenReadWrite("/db/b"); return err },
		func() error { return f.Close() },
		func() (err error) { f, err = fs.Open("/db/b"); return err },
		func() error { return f.Close() },
	}
	defer func() {
		if m != nil {
			m.Close()
		}
		if l != nil {
			l.Close()
		}
	}()
	for i, step := range steps {
		if err := step(); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func TestErrorFSOnIndex(t *testing.T) {
	count := OnIndex(-1, nil)
	failed, err := workload(NewErrorFS(NewMem(), count))
	require.NoError(t, err)
	require.Equal(t, -1, failed)
	require.EqualValues(t, 20, count.Count(), "one operation per step")

	for i := range count.Count() {
		inj := OnIndex(i, ErrInjectedIO)
		fs := NewErrorFS(NewMem(), inj)
		failed, err := workload(fs)
		require.EqualValues(t, i, failed)
		require.ErrorIs(t, err, ErrInjected)
		require.ErrorIs(t, err, syscall.EIO)
		require.EqualValues(t, i+1, inj.Count())
		require.NoError(t, fs.MkdirAll("/other", 0o755), "later operations succeed")
	}
}

func TestErrorFSWrapsPlainErrors(t *testing.T) {
	fs := NewErrorFS(NewMem(), OnIndex(0, syscall.ENOSPC))
	err := fs.MkdirAll("/db", 0o755)
	require.ErrorIs(t, err, ErrInjected)
	require.ErrorIs(t, err, syscall.ENOSPC)
	var pe *os.PathError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "/db", pe.Path)

	fs = NewErrorFS(NewMem(), OnIndex(0, nil))
	require.ErrorIs(t, fs.MkdirAll("/db", 0o755), ErrInjected)
}

func TestErrorFSOnKind(t *testing.T) {
	mem := newTestMem(t)
	inj := OnKind(ErrInjectedNoSpace, OpWrite, OpSync)
	inj.Disable()
	fs := NewErrorFS(mem, inj)
	f, err := fs.Create("/db/a")
	require.NoError(t, err)
	_, err = f.Write([]byte("ok"))
	require.NoError(t, err)

	inj.Enable()
	n, err := f.Write(make([]byte, 100))
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.True(t, errors.Is(err, ErrInjected))
	require.Zero(t, n)
	require.ErrorIs(t, f.Sync(), ErrInjected)
	require.NoError(t, f.Truncate(1), "other kinds pass")
	size, err := f.Size()
	require.NoError(t, err)
	require.EqualValues(t, 1, size)

	inj.PartialWrites = true
	n, err = f.Write([]byte("0123456789"))
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, 5, n, "half the buffer written")
	require.Equal(t, "o01234", readFile(t, mem, "/db/a"))

	inj.Disable()
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func TestErrorFSCounterPartialWrite(t *testing.T) {
	mem := newTestMem(t)
	inj := OnIndex(1, ErrInjectedNoSpace)
	inj.PartialWrites = true
	f, err := NewErrorFS(mem, inj).Create("/db/a")
	require.NoError(t, err)
	n, err := f.Write([]byte("abcdefgh"))
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, 4, n)
	require.Equal(t, "abcd", readFile(t, mem, "/db/a"))
	require.NoError(t, f.Close())
}

func TestErrorFSFailedCloseStillCloses(t *testing.T) {
	inj := OnKind(ErrInjectedIO, OpClose)
	fs := NewErrorFS(newTestMem(t), inj)
	f, err := fs.Create("/db/a")
	require.NoError(t, err)
	require.ErrorIs(t, f.Close(), syscall.EIO)
	inj.Disable()
	require.ErrorIs(t, f.Close(), os.ErrClosed, "inner file was closed")
}

func TestErrorFSInjectorFunc(t *testing.T) {
	var seen []string
	fs := NewErrorFS(newTestMem(t), InjectorFunc(func(op Op, name string) error {
		seen = append(seen, op.String()+" "+name)
		if op == OpRename {
			return syscall.EIO
		}
		return nil
	}))
	writeFile(t, fs, "/db/a", "x")
	require.ErrorIs(t, fs.Rename("/db/a", "/db/b"), ErrInjected)
	require.Equal(t, []string{"create /db/a", "write /db/a", "sync /db/a", "close /db/a", "rename /db/a"}, seen)
	require.Equal(t, "Op(99)", Op(99).String())
}
