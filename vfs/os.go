package vfs

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Default is the operating system's filesystem. Names are used as given.
var Default FS = osFS{}

type osFS struct{}

// Files are opened with O_APPEND so that Write lands at the end of the file
// even after Truncate, which a tracked file offset would not.
const osWriteFlags = os.O_RDWR | os.O_APPEND

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, osWriteFlags|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenReadWrite(name string) (File, error) {
	f, err := os.OpenFile(name, osWriteFlags, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error        { return os.Rename(oldname, newname) }
func (osFS) Link(oldname, newname string) error          { return os.Link(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) Stat(name string) (os.FileInfo, error)       { return os.Stat(name) }

func (osFS) List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Lock uses flock, whose locks belong to the open file description: a
// second Lock of the same file from this process conflicts too, so the
// lock also guards against opening one database twice in one process.
func (osFS) Lock(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return flock(f, name, unix.LOCK_EX)
}

func (osFS) RLock(name string) (io.Closer, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return noLock{}, nil
	}
	if err != nil {
		return nil, err
	}
	return flock(f, name, unix.LOCK_SH)
}

type noLock struct{}

func (noLock) Close() error { return nil }

// flock takes a lock of the given kind on f without blocking; on failure it
// closes f.
func flock(f *os.File, name string, how int) (io.Closer, error) {
	err := withFd(f, func(fd int) error {
		for {
			err := unix.Flock(fd, how|unix.LOCK_NB)
			if err != unix.EINTR {
				return err
			}
		}
	})
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = ErrLocked
		}
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return &osLock{f: f}, nil
}

type osLock struct {
	once sync.Once
	f    *os.File
}

// Close releases the lock; closing the descriptor drops the flock.
func (l *osLock) Close() error {
	var err error
	l.once.Do(func() { err = l.f.Close() })
	return err
}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f osFile) Map(length int) (Mapping, error) {
	if length < 0 {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: unix.EINVAL}
	}
	if length == 0 {
		return &osMapping{}, nil // mmap rejects a zero length
	}
	var b []byte
	err := withFd(f.File, func(fd int) (err error) {
		b, err = unix.Mmap(fd, 0, length, unix.PROT_READ, unix.MAP_SHARED)
		return err
	})
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	return &osMapping{b: b, view: b, name: f.Name()}, nil
}

// Advise applies posix_fadvise to the whole file.
func (f osFile) Advise(a Access) error {
	adv := unix.FADV_NORMAL
	switch a {
	case AccessRandom:
		adv = unix.FADV_RANDOM
	case AccessSequential:
		adv = unix.FADV_SEQUENTIAL
	}
	err := withFd(f.File, func(fd int) error { return unix.Fadvise(fd, 0, 0, adv) })
	if err != nil {
		return &os.PathError{Op: "fadvise", Path: f.Name(), Err: err}
	}
	return nil
}

// withFd runs fn with f's descriptor without f.Fd, which would switch the
// file to blocking mode.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

type osMapping struct {
	mu sync.Mutex
	b  []byte // nil after Close; guarded by mu
	// view is b as mapped, never changed: Resident reads it without the
	// lock (a Get would otherwise take it twice). After Close, mincore on
	// the unmapped range fails (ENOMEM), never touches memory.
	view []byte
	name string // the file's, for errors
}

func (m *osMapping) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b
}

// Close unmaps the view; closing twice is a no-op.
func (m *osMapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.b == nil {
		return nil
	}
	err := unix.Munmap(m.b)
	m.b = nil
	if err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}

// Advise applies madvise to the whole view.
func (m *osMapping) Advise(a Access) error {
	adv := unix.MADV_NORMAL
	switch a {
	case AccessRandom:
		adv = unix.MADV_RANDOM
	case AccessSequential:
		adv = unix.MADV_SEQUENTIAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.b) == 0 {
		return nil
	}
	if err := unix.Madvise(m.b, adv); err != nil {
		return &os.PathError{Op: "madvise", Path: m.name, Err: err}
	}
	return nil
}

// residentPages is how many pages one mincore call checks (its result
// vector lives on the stack).
const residentPages = 64

// Resident asks mincore whether the pages of [off, off+n) are in the page
// cache. One system call per residentPages pages; it never reads the
// file. The view's base is page-aligned (mmap returns it so), and mincore
// wants a page-aligned start, so the range is widened to whole pages.
func (m *osMapping) Resident(off, n int) (bool, error) {
	b := m.view
	if off < 0 || n < 0 || off+n > len(b) {
		return false, &os.PathError{Op: "mincore", Path: m.name, Err: unix.EINVAL}
	}
	if n == 0 {
		return true, nil
	}
	start := off &^ (pageSize - 1)
	end := min(len(b), (off+n+pageSize-1)&^(pageSize-1))
	var vec [residentPages]byte
	for start < end {
		chunk := min(end-start, residentPages*pageSize)
		np := (chunk + pageSize - 1) / pageSize
		if err := mincore(b[start:start+chunk], vec[:np]); err != nil {
			return false, &os.PathError{Op: "mincore", Path: m.name, Err: err}
		}
		for _, v := range vec[:np] {
			if v&1 == 0 {
				return false, nil
			}
		}
		start += chunk
	}
	return true, nil
}

var pageSize = unix.Getpagesize()

// mincore is mincore(2) (x/sys/unix has no wrapper on every platform): it
// fills vec, one byte per page of b, with bit 0 set for resident pages.
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))),
		uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}
