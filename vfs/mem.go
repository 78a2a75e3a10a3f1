package vfs

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// MemFS is an in-memory FS for tests. Besides the current state it keeps
// what would survive a power loss: each file's contents as of its last
// File.Sync and each directory's entries as of its last SyncDir, so that
// CrashClone can produce the state after a crash.
//
// Names are slash-separated; relative and absolute names share one
// namespace rooted at "/". Parent directories must exist (see MkdirAll).
// A MemFS is safe for concurrent use.
type MemFS struct {
	mu    sync.Mutex // guards the directory tree and locks
	root  *memNode
	locks map[string]int // -1: exclusive; n > 0: n shared holders
}

// memNode is a directory or a file. Hard links share a node.
type memNode struct {
	isDir   bool
	modTime time.Time // immutable for directories; guarded by mu for files

	// Directories only, guarded by MemFS.mu.
	children map[string]*memNode
	synced   map[string]*memNode // entries as of the last SyncDir

	// Files only, guarded by mu.
	mu sync.RWMutex
	// data is the current contents. data[len:cap] is always zero, so a
	// Mapping (a slice of the same array up to its length) shows zeros
	// past the end and sees appends that fit in the capacity.
	data []byte
	// durable is the contents as of the last Sync, in its own array.
	durable []byte
	// dirtyFrom bounds the unsynced changes: data[:dirtyFrom] equals
	// durable[:dirtyFrom], and dirtyFrom <= min(len(data), len(durable)).
	dirtyFrom int
}

// NewMem returns an empty in-memory filesystem.
func NewMem() *MemFS {
	return &MemFS{root: newMemDir(time.Now()), locks: map[string]int{}}
}

func newMemDir(mod time.Time) *memNode {
	return &memNode{isDir: true, modTime: mod, children: map[string]*memNode{}, synced: map[string]*memNode{}}
}

// memClean maps name to a rooted, cleaned path; ".." cannot escape the root.
func memClean(name string) string { return path.Clean("/" + name) }

// walk returns the directory holding name and name's last element. For the
// root it returns (nil, "").
func (fs *MemFS) walk(op, name string) (*memNode, string, error) {
	p := memClean(name)
	if p == "/" {
		return nil, "", nil
	}
	elems := strings.Split(p[1:], "/")
	dir := fs.root
	for _, e := range elems[:len(elems)-1] {
		next, ok := dir.children[e]
		if !ok {
			return nil, "", &os.PathError{Op: op, Path: name, Err: syscall.ENOENT}
		}
		if !next.isDir {
			return nil, "", &os.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		dir = next
	}
	return dir, elems[len(elems)-1], nil
}

// lookup returns the node named name.
func (fs *MemFS) lookup(op, name string) (*memNode, error) {
	dir, base, err := fs.walk(op, name)
	if err != nil {
		return nil, err
	}
	if dir == nil {
		return fs.root, nil
	}
	n, ok := dir.children[base]
	if !ok {
		return nil, &os.PathError{Op: op, Path: name, Err: syscall.ENOENT}
	}
	return n, nil
}

// lookupFile is lookup that rejects directories.
func (fs *MemFS) lookupFile(op, name string) (*memNode, error) {
	n, err := fs.lookup(op, name)
	if err == nil && n.isDir {
		err = &os.PathError{Op: op, Path: name, Err: syscall.EISDIR}
	}
	return n, err
}

// Create implements FS. Creating an existing file truncates it in place, so
// hard links to it see the truncation, as on a real filesystem.
func (fs *MemFS) Create(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.create("open", name)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.truncate(0)
	n.mu.Unlock()
	return &memFile{name: name, node: n, writable: true}, nil
}

// create returns the file node for name, adding an empty one if missing.
func (fs *MemFS) create(op, name string) (*memNode, error) {
	dir, base, err := fs.walk(op, name)
	if err != nil {
		return nil, err
	}
	if dir == nil {
		return nil, &os.PathError{Op: op, Path: name, Err: syscall.EISDIR}
	}
	if n, ok := dir.children[base]; ok {
		if n.isDir {
			return nil, &os.PathError{Op: op, Path: name, Err: syscall.EISDIR}
		}
		return n, nil
	}
	n := &memNode{modTime: time.Now()}
	dir.children[base] = n
	return n, nil
}

// Open implements FS.
func (fs *MemFS) Open(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.lookupFile("open", name)
	if err != nil {
		return nil, err
	}
	return &memFile{name: name, node: n}, nil
}

// OpenReadWrite implements FS.
func (fs *MemFS) OpenReadWrite(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.lookupFile("open", name)
	if err != nil {
		return nil, err
	}
	return &memFile{name: name, node: n, writable: true}, nil
}

// Remove implements FS.
func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir, base, err := fs.walk("remove", name)
	if err != nil {
		return err
	}
	if dir == nil {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.EBUSY}
	}
	n, ok := dir.children[base]
	if !ok {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.ENOENT}
	}
	if n.isDir && len(n.children) > 0 {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(dir.children, base)
	return nil
}

// Rename implements FS.
func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fail := func(err error) error {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	odir, obase, err := fs.walk("rename", oldname)
	if err != nil {
		return fail(err.(*os.PathError).Err)
	}
	ndir, nbase, err := fs.walk("rename", newname)
	if err != nil {
		return fail(err.(*os.PathError).Err)
	}
	if odir == nil || ndir == nil {
		return fail(syscall.EBUSY)
	}
	n, ok := odir.children[obase]
	if !ok {
		return fail(syscall.ENOENT)
	}
	if n.isDir && strings.HasPrefix(memClean(newname)+"/", memClean(oldname)+"/") {
		if memClean(newname) == memClean(oldname) {
			return nil
		}
		return fail(syscall.EINVAL) // into its own subtree
	}
	if old, ok := ndir.children[nbase]; ok {
		switch {
		case old == n:
			return nil // POSIX: links to the same file, nothing to do
		case n.isDir && !old.isDir:
			return fail(syscall.ENOTDIR)
		case !n.isDir && old.isDir:
			return fail(syscall.EISDIR)
		case old.isDir && len(old.children) > 0:
			return fail(syscall.ENOTEMPTY)
		}
	}
	delete(odir.children, obase)
	ndir.children[nbase] = n
	return nil
}

// Link implements FS.
func (fs *MemFS) Link(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fail := func(err error) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	n, err := fs.lookup("link", oldname)
	if err != nil {
		return fail(err.(*os.PathError).Err)
	}
	if n.isDir {
		return fail(syscall.EPERM)
	}
	ndir, nbase, err := fs.walk("link", newname)
	if err != nil {
		return fail(err.(*os.PathError).Err)
	}
	if ndir == nil {
		return fail(syscall.EEXIST)
	}
	if _, ok := ndir.children[nbase]; ok {
		return fail(syscall.EEXIST)
	}
	ndir.children[nbase] = n
	return nil
}

// MkdirAll implements FS. New directories are durable at once (they enter
// their parent's synced entries too), which keeps crash tests simple.
func (fs *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := memClean(dir)
	if p == "/" {
		return nil
	}
	d := fs.root
	for _, e := range strings.Split(p[1:], "/") {
		next, ok := d.children[e]
		if !ok {
			next = newMemDir(time.Now())
			d.children[e] = next
			d.synced[e] = next
		} else if !next.isDir {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		d = next
	}
	return nil
}

// List implements FS.
func (fs *MemFS) List(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.lookup("open", dir)
	if err != nil {
		return nil, err
	}
	if !n.isDir {
		return nil, &os.PathError{Op: "readdirent", Path: dir, Err: syscall.ENOTDIR}
	}
	return slices.Sorted(maps.Keys(n.children)), nil
}

// Stat implements FS.
func (fs *MemFS) Stat(name string) (os.FileInfo, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	fi := &memFileInfo{name: path.Base(memClean(name)), isDir: n.isDir}
	if n.isDir {
		fi.modTime = n.modTime // immutable
	} else {
		// A file's modTime changes with its writes: read under its lock.
		n.mu.RLock()
		fi.size, fi.modTime = int64(len(n.data)), n.modTime
		n.mu.RUnlock()
	}
	return fi, nil
}

// SyncDir implements FS: the directory's current entries become the ones a
// crash preserves.
func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.lookup("sync", dir)
	if err != nil {
		return err
	}
	if !n.isDir {
		return &os.PathError{Op: "sync", Path: dir, Err: syscall.ENOTDIR}
	}
	n.synced = maps.Clone(n.children)
	return nil
}

// Lock implements FS. Locks are per MemFS and per cleaned name.
func (fs *MemFS) Lock(name string) (io.Closer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	key := memClean(name)
	if fs.locks[key] != 0 {
		return nil, &os.PathError{Op: "flock", Path: name, Err: ErrLocked}
	}
	if _, err := fs.create("open", name); err != nil {
		return nil, err
	}
	fs.locks[key] = -1
	return &memLock{fs: fs, key: key}, nil
}

// RLock takes a shared lock; see FS.
func (fs *MemFS) RLock(name string) (io.Closer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	key := memClean(name)
	if fs.locks[key] < 0 {
		return nil, &os.PathError{Op: "flock", Path: name, Err: ErrLocked}
	}
	fs.locks[key]++
	return &memLock{fs: fs, key: key}, nil
}

type memLock struct {
	fs   *MemFS
	key  string
	once sync.Once
}

func (l *memLock) Close() error {
	l.once.Do(func() {
		l.fs.mu.Lock()
		if n := l.fs.locks[l.key]; n > 1 {
			l.fs.locks[l.key] = n - 1
		} else {
			delete(l.fs.locks, l.key)
		}
		l.fs.mu.Unlock()
	})
	return nil
}

// String lists the current tree, one "path size" line per file, for
// debugging test failures.
func (fs *MemFS) String() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var b strings.Builder
	var walk func(prefix string, d *memNode)
	walk = func(prefix string, d *memNode) {
		for _, name := range slices.Sorted(maps.Keys(d.children)) {
			n := d.children[name]
			if n.isDir {
				fmt.Fprintf(&b, "%s%s/\n", prefix, name)
				walk(prefix+name+"/", n)
				continue
			}
			n.mu.RLock()
			fmt.Fprintf(&b, "%s%s %d\n", prefix, name, len(n.data))
			n.mu.RUnlock()
		}
	}
	walk("/", fs.root)
	return b.String()
}

// truncate sets the size of file n; n.mu must be held. Dropped bytes are
// zeroed in place so that mappings show zeros there.
func (n *memNode) truncate(size int) {
	switch {
	case size <= len(n.data):
		clear(n.data[size:])
		n.data = n.data[:size]
		n.dirtyFrom = min(n.dirtyFrom, size)
	case size <= cap(n.data):
		n.data = n.data[:size] // the tail is already zero
	default:
		n.data = slices.Grow(n.data, size-len(n.data))[:size]
	}
	n.modTime = time.Now()
}

type memFile struct {
	name     string
	node     *memNode
	writable bool
	closed   atomic.Bool
}

func (f *memFile) check(op string, write bool) error {
	if f.closed.Load() {
		return &os.PathError{Op: op, Path: f.name, Err: os.ErrClosed}
	}
	if write && !f.writable {
		return &os.PathError{Op: op, Path: f.name, Err: syscall.EBADF}
	}
	return nil
}

func (f *memFile) Write(p []byte) (int, error) {
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	n := f.node
	n.mu.Lock()
	defer n.mu.Unlock()
	// Within the capacity append writes in place, where mappings see it.
	n.data = append(n.data, p...)
	n.modTime = time.Now()
	return len(p), nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &os.PathError{Op: "read", Path: f.name, Err: syscall.EINVAL}
	}
	n := f.node
	n.mu.RLock()
	defer n.mu.RUnlock()
	if off >= int64(len(n.data)) {
		return 0, io.EOF
	}
	c := copy(p, n.data[off:])
	if c < len(p) {
		return c, io.EOF
	}
	return c, nil
}

func (f *memFile) Close() error {
	if f.closed.Swap(true) {
		return &os.PathError{Op: "close", Path: f.name, Err: os.ErrClosed}
	}
	return nil
}

// Sync copies only the changed suffix into the durable contents, so that
// frequent syncs of a growing log stay cheap.
func (f *memFile) Sync() error {
	if err := f.check("sync", false); err != nil {
		return err
	}
	n := f.node
	n.mu.Lock()
	defer n.mu.Unlock()
	n.durable = append(n.durable[:n.dirtyFrom], n.data[n.dirtyFrom:]...)
	n.dirtyFrom = len(n.data)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if size < 0 || size != int64(int(size)) {
		return &os.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	f.node.truncate(int(size))
	return nil
}

func (f *memFile) Size() (int64, error) {
	if err := f.check("stat", false); err != nil {
		return 0, err
	}
	f.node.mu.RLock()
	defer f.node.mu.RUnlock()
	return int64(len(f.node.data)), nil
}

// Advise is a no-op: a memory file reads nothing ahead.
func (f *memFile) Advise(Access) error { return nil }

// Map makes the backing array's capacity at least length so that later
// appends land where the view can see them. Only a write past the capacity,
// or a later Map with a larger length, moves the array; views taken before
// then stop seeing new bytes.
func (f *memFile) Map(length int) (Mapping, error) {
	if err := f.check("mmap", false); err != nil {
		return nil, err
	}
	if length < 0 {
		return nil, &os.PathError{Op: "mmap", Path: f.name, Err: syscall.EINVAL}
	}
	if length == 0 {
		return &memMapping{}, nil
	}
	n := f.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if cap(n.data) < length {
		n.data = slices.Grow(n.data, length-len(n.data))
	}
	return &memMapping{b: n.data[:length:length]}, nil
}

type memMapping struct {
	b      []byte
	closed atomic.Bool
}

// Bytes returns nil after Close, to make use after Close fail loudly.
func (m *memMapping) Bytes() []byte {
	if m.closed.Load() {
		return nil
	}
	return m.b
}

// Advise is a no-op: a memory file has no pages to read ahead.
func (m *memMapping) Advise(Access) error { return nil }

// Resident reports true: a memory file's bytes are always in memory.
func (m *memMapping) Resident(off, n int) (bool, error) {
	if off < 0 || n < 0 || off+n > len(m.b) {
		return false, syscall.EINVAL
	}
	return true, nil
}

func (m *memMapping) Close() error {
	m.closed.Store(true)
	return nil
}

type memFileInfo struct {
	name    string
	size    int64
	isDir   bool
	modTime time.Time
}

func (fi *memFileInfo) Name() string       { return fi.name }
func (fi *memFileInfo) Size() int64        { return fi.size }
func (fi *memFileInfo) ModTime() time.Time { return fi.modTime }
func (fi *memFileInfo) IsDir() bool        { return fi.isDir }
func (fi *memFileInfo) Sys() any           { return nil }
func (fi *memFileInfo) Mode() os.FileMode {
	if fi.isDir {
		return os.ModeDir | 0o755
	}
	return 0o644
}
