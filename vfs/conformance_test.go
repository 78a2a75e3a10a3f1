package vfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConformance runs the same checks against every FS implementation, so
// MemFS cannot drift from the OS behaviour the engine relies on.
func TestConformance(t *testing.T) {
	impls := []struct {
		name string
		fs   func() FS
		dir  func(t *testing.T) string
	}{
		{"os", func() FS { return Default }, func(t *testing.T) string { return t.TempDir() }},
		{"mem", func() FS { return NewMem() }, func(*testing.T) string { return "/db" }},
		{"errorfs", func() FS { return NewErrorFS(NewMem(), OnIndex(-1, nil)) }, func(*testing.T) string { return "db" }},
	}
	checks := []struct {
		name string
		fn   func(t *testing.T, fs FS, dir string)
	}{
		{"Missing", testMissing},
		{"WriteRead", testWriteRead},
		{"TruncateThenAppend", testTruncateThenAppend},
		{"ReopenAppends", testReopenAppends},
		{"CreateTruncates", testCreateTruncates},
		{"ReadOnly", testReadOnly},
		{"RenameLinkRemove", testRenameLinkRemove},
		{"Dirs", testDirs},
		{"Map", testMap},
		{"Lock", testLock},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					fs, dir := impl.fs(), impl.dir(t)
					require.NoError(t, fs.MkdirAll(dir, 0o755))
					c.fn(t, fs, dir)
				})
			}
		})
	}
}

func writeFile(t *testing.T, fs FS, name, data string) {
	t.Helper()
	f, err := fs.Create(name)
	require.NoError(t, err)
	_, err = f.Write([]byte(data))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func readFile(t *testing.T, fs FS, name string) string {
	t.Helper()
	f, err := fs.Open(name)
	require.NoError(t, err)
	defer f.Close()
	size, err := f.Size()
	require.NoError(t, err)
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if err != io.EOF {
		require.NoError(t, err)
	}
	require.Equal(t, int(size), n)
	return string(buf)
}

func testMissing(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "nope")
	_, err := fs.Open(name)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = fs.OpenReadWrite(name)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = fs.Stat(name)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorIs(t, fs.Remove(name), os.ErrNotExist)
	require.ErrorIs(t, fs.Rename(name, filepath.Join(dir, "x")), os.ErrNotExist)
	_, err = fs.Create(filepath.Join(dir, "nodir", "f"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = fs.List(filepath.Join(dir, "nodir"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = fs.Lock(filepath.Join(dir, "nodir", "LOCK"))
	require.ErrorIs(t, err, os.ErrNotExist)

	var pe *os.PathError
	_, err = fs.Open(name)
	require.ErrorAs(t, err, &pe)
}

func testWriteRead(t *testing.T, fs FS, dir string) {
	f, err := fs.Create(filepath.Join(dir, "a"))
	require.NoError(t, err)
	defer f.Close()
	for _, s := range []string{"hello", " ", "world"} {
		n, err := f.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, len(s), n)
	}
	size, err := f.Size()
	require.NoError(t, err)
	require.EqualValues(t, 11, size)

	buf := make([]byte, 5)
	n, err := f.ReadAt(buf, 6)
	require.NoError(t, err)
	require.Equal(t, "world", string(buf[:n]))

	n, err = f.ReadAt(buf, 8) // straddles the end
	require.Equal(t, io.EOF, err)
	require.Equal(t, "rld", string(buf[:n]))

	n, err = f.ReadAt(buf, 11)
	require.Equal(t, io.EOF, err)
	require.Zero(t, n)

	require.NoError(t, f.Sync())
	fi, err := fs.Stat(filepath.Join(dir, "a"))
	require.NoError(t, err)
	require.Equal(t, "a", fi.Name())
	require.EqualValues(t, 11, fi.Size())
	require.False(t, fi.IsDir())
}

func testTruncateThenAppend(t *testing.T, fs FS, dir string) {
	f, err := fs.Create(filepath.Join(dir, "a"))
	require.NoError(t, err)
	_, err = f.Write([]byte("hello world"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(5))
	_, err = f.Write([]byte("!")) // must land at the new end, not offset 11
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "hello!", readFile(t, fs, filepath.Join(dir, "a")))

	f, err = fs.OpenReadWrite(filepath.Join(dir, "a"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(8)) // grows with zeros
	_, err = f.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "hello!\x00\x00x", readFile(t, fs, filepath.Join(dir, "a")))
}

func testReopenAppends(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, "abc")
	f, err := fs.OpenReadWrite(name)
	require.NoError(t, err)
	size, err := f.Size()
	require.NoError(t, err)
	require.EqualValues(t, 3, size)
	_, err = f.Write([]byte("def"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "abcdef", readFile(t, fs, name))
}

func testCreateTruncates(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, "long contents")
	writeFile(t, fs, name, "new")
	require.Equal(t, "new", readFile(t, fs, name))
}

func testReadOnly(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, "abc")
	f, err := fs.Open(name)
	require.NoError(t, err)
	_, err = f.Write([]byte("x"))
	require.Error(t, err)
	require.NoError(t, f.Close())
	require.Error(t, f.Close(), "second close")
	require.Equal(t, "abc", readFile(t, fs, name))
}

func testRenameLinkRemove(t *testing.T, fs FS, dir string) {
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	writeFile(t, fs, a, "A")
	writeFile(t, fs, b, "B")

	require.NoError(t, fs.Rename(a, b)) // replaces b
	_, err := fs.Stat(a)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, "A", readFile(t, fs, b))

	require.NoError(t, fs.Link(b, c))
	require.ErrorIs(t, fs.Link(b, c), os.ErrExist)
	f, err := fs.OpenReadWrite(c)
	require.NoError(t, err)
	_, err = f.Write([]byte("+"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "A+", readFile(t, fs, b), "links share contents")

	require.NoError(t, fs.Remove(b))
	require.Equal(t, "A+", readFile(t, fs, c), "other link survives")
	names, err := fs.List(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, names)
	require.NoError(t, fs.SyncDir(dir))
}

func testDirs(t *testing.T, fs FS, dir string) {
	sub := filepath.Join(dir, "x", "y")
	require.NoError(t, fs.MkdirAll(sub, 0o755))
	require.NoError(t, fs.MkdirAll(sub, 0o755), "idempotent")
	for _, n := range []string{"zeta", "alpha", "mid"} {
		writeFile(t, fs, filepath.Join(sub, n), n)
	}
	names, err := fs.List(sub)
	require.NoError(t, err)
	require.Equal(t, []string{"alpha", "mid", "zeta"}, names)
	names, err = fs.List(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, names)

	fi, err := fs.Stat(sub)
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	require.Equal(t, "y", fi.Name())
	require.NoError(t, fs.SyncDir(sub))

	require.Error(t, fs.Remove(sub), "not empty")
	require.Error(t, fs.MkdirAll(filepath.Join(sub, "alpha", "z"), 0o755), "file in the way")
	names, err = fs.List(sub)
	require.NoError(t, err)
	for _, n := range names {
		require.NoError(t, fs.Remove(filepath.Join(sub, n)))
	}
	require.NoError(t, fs.Remove(sub))
	_, err = fs.Stat(sub)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func testMap(t *testing.T, fs FS, dir string) {
	const length = 3 * 4096
	f, err := fs.Create(filepath.Join(dir, "seg"))
	require.NoError(t, err)
	_, err = f.Write([]byte("0123456789"))
	require.NoError(t, err)

	m, err := f.Map(length)
	require.NoError(t, err)
	b := m.Bytes()
	require.Len(t, b, length)
	require.Equal(t, "0123456789", string(b[:10]))

	// Appends below length show up in the same view, across pages.
	tail := make([]byte, 5000)
	for i := range tail {
		tail[i] = byte('a' + i%26)
	}
	_, err = f.Write(tail)
	require.NoError(t, err)
	require.Equal(t, tail, b[10:10+len(tail)])

	// The view outlives the file.
	require.NoError(t, f.Close())
	require.Equal(t, "0123456789", string(m.Bytes()[:10]))
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "second close")

	// A read-only file maps too, and a zero length is allowed.
	f, err = fs.Open(filepath.Join(dir, "seg"))
	require.NoError(t, err)
	defer f.Close()
	m, err = f.Map(0)
	require.NoError(t, err)
	require.Empty(t, m.Bytes())
	require.NoError(t, m.Close())
	m, err = f.Map(4096)
	require.NoError(t, err)
	require.Equal(t, "0123456789", string(m.Bytes()[:10]))
	require.NoError(t, m.Close())
}

func testLock(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "LOCK")
	l, err := fs.Lock(name)
	require.NoError(t, err)
	_, err = fs.Stat(name)
	require.NoError(t, err, "Lock creates the file")

	_, err = fs.Lock(name)
	require.ErrorIs(t, err, ErrLocked)
	require.True(t, errors.Is(err, ErrLocked))

	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "second close")
	l, err = fs.Lock(name)
	require.NoError(t, err)
	require.NoError(t, l.Close())
}
