package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
)

// Op is a kind of filesystem operation, as seen by an Injector.
type Op int

// The operations an ErrorFS checks. Each call through the wrapper is one
// operation; the Injector sees the name the call was given (the old name
// for Rename and Link, the file's name for File methods).
const (
	OpCreate   Op = iota // FS.Create
	OpOpen               // FS.Open and FS.OpenReadWrite
	OpWrite              // File.Write
	OpRead               // File.ReadAt
	OpSync               // File.Sync
	OpTruncate           // File.Truncate
	OpRemove             // FS.Remove
	OpRename             // FS.Rename
	OpLink               // FS.Link
	OpMkdir              // FS.MkdirAll
	OpList               // FS.List
	OpStat               // FS.Stat and File.Size
	OpSyncDir            // FS.SyncDir
	OpLock               // FS.Lock
	OpMap                // File.Map
	OpClose              // File.Close
	numOps
)

var opNames = [numOps]string{
	"create", "open", "write", "read", "sync", "truncate", "remove", "rename",
	"link", "mkdir", "list", "stat", "syncdir", "lock", "map", "close",
}

// String returns the operation's name ("create", "write", ...).
func (op Op) String() string {
	if op >= 0 && op < numOps {
		return opNames[op]
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// Injector decides which operations of an ErrorFS fail.
type Injector interface {
	// MaybeError returns the error op on name should fail with, or nil to
	// let it proceed. It may be called concurrently.
	MaybeError(op Op, name string) error
}

// ShortWriter is optionally implemented by an Injector to make a failed
// Write first write part of its buffer, as a write to a full disk does.
type ShortWriter interface {
	// ShortWrite returns how many of the n bytes of a Write failed with err
	// reach the file.
	ShortWrite(err error, n int) int
}

// InjectorFunc adapts a function to an Injector.
type InjectorFunc func(op Op, name string) error

// MaybeError implements Injector.
func (f InjectorFunc) MaybeError(op Op, name string) error { return f(op, name) }

// Errors for injectors that want a specific errno; both wrap ErrInjected.
var (
	ErrInjectedNoSpace = fmt.Errorf("%w: %w", ErrInjected, syscall.ENOSPC)
	ErrInjectedIO      = fmt.Errorf("%w: %w", ErrInjected, syscall.EIO)
)

// NewErrorFS wraps inner so that every operation, including those on the
// files it returns, first asks inj whether to fail. A failed operation
// does not reach inner, except that a failed File.Close still closes the
// file (like close(2), which releases the descriptor even when it reports
// an error) and a failed Write may write a prefix (see ShortWriter).
//
// Injected errors are *os.PathError values wrapping the injector's error,
// which is made to wrap ErrInjected if it does not already.
func NewErrorFS(inner FS, inj Injector) FS {
	return &errorFS{inner: inner, inj: inj}
}

type errorFS struct {
	inner FS
	inj   Injector
}

func (fs *errorFS) check(op Op, name string) error {
	err := fs.inj.MaybeError(op, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrInjected) {
		err = fmt.Errorf("%w: %w", ErrInjected, err)
	}
	return &os.PathError{Op: op.String(), Path: name, Err: err}
}

func (fs *errorFS) open(op Op, name string, open func(string) (File, error)) (File, error) {
	if err := fs.check(op, name); err != nil {
		return nil, err
	}
	f, err := open(name)
	if err != nil {
		return nil, err
	}
	return &errorFile{fs: fs, name: name, inner: f}, nil
}

func (fs *errorFS) Create(name string) (File, error) { return fs.open(OpCreate, name, fs.inner.Create) }
func (fs *errorFS) Open(name string) (File, error)   { return fs.open(OpOpen, name, fs.inner.Open) }
func (fs *errorFS) OpenReadWrite(name string) (File, error) {
	return fs.open(OpOpen, name, fs.inner.OpenReadWrite)
}

func (fs *errorFS) Remove(name string) error {
	if err := fs.check(OpRemove, name); err != nil {
		return err
	}
	return fs.inner.Remove(name)
}

func (fs *errorFS) Rename(oldname, newname string) error {
	if err := fs.check(OpRename, oldname); err != nil {
		return err
	}
	return fs.inner.Rename(oldname, newname)
}

func (fs *errorFS) Link(oldname, newname string) error {
	if err := fs.check(OpLink, oldname); err != nil {
		return err
	}
	return fs.inner.Link(oldname, newname)
}

func (fs *errorFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := fs.check(OpMkdir, dir); err != nil {
		return err
	}
	return fs.inner.MkdirAll(dir, perm)
}

func (fs *errorFS) List(dir string) ([]string, error) {
	if err := fs.check(OpList, dir); err != nil {
		return nil, err
	}
	return fs.inner.List(dir)
}

func (fs *errorFS) Stat(name string) (os.FileInfo, error) {
	if err := fs.check(OpStat, name); err != nil {
		return nil, err
	}
	return fs.inner.Stat(name)
}

func (fs *errorFS) SyncDir(dir string) error {
	if err := fs.check(OpSyncDir, dir); err != nil {
		return err
	}
	return fs.inner.SyncDir(dir)
}

func (fs *errorFS) Lock(name string) (io.Closer, error) {
	if err := fs.check(OpLock, name); err != nil {
		return nil, err
	}
	return fs.inner.Lock(name)
}

func (fs *errorFS) RLock(name string) (io.Closer, error) {
	if err := fs.check(OpLock, name); err != nil {
		return nil, err
	}
	return fs.inner.RLock(name)
}

type errorFile struct {
	fs    *errorFS
	name  string
	inner File
}

func (f *errorFile) Write(p []byte) (int, error) {
	err := f.fs.check(OpWrite, f.name)
	if err == nil {
		return f.inner.Write(p)
	}
	sw, ok := f.fs.inj.(ShortWriter)
	if !ok {
		return 0, err
	}
	k := min(max(sw.ShortWrite(err, len(p)), 0), len(p))
	if k == 0 {
		return 0, err
	}
	n, werr := f.inner.Write(p[:k])
	if werr != nil {
		return n, werr
	}
	return n, err
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.check(OpRead, f.name); err != nil {
		return 0, err
	}
	return f.inner.ReadAt(p, off)
}

func (f *errorFile) Close() error {
	err := f.fs.check(OpClose, f.name)
	if cerr := f.inner.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *errorFile) Sync() error {
	if err := f.fs.check(OpSync, f.name); err != nil {
		return err
	}
	return f.inner.Sync()
}

func (f *errorFile) Truncate(size int64) error {
	if err := f.fs.check(OpTruncate, f.name); err != nil {
		return err
	}
	return f.inner.Truncate(size)
}

func (f *errorFile) Size() (int64, error) {
	if err := f.fs.check(OpStat, f.name); err != nil {
		return 0, err
	}
	return f.inner.Size()
}

// Advise is a hint and is never failed.
func (f *errorFile) Advise(a Access) error { return f.inner.Advise(a) }

func (f *errorFile) Map(length int) (Mapping, error) {
	if err := f.fs.check(OpMap, f.name); err != nil {
		return nil, err
	}
	return f.inner.Map(length)
}

// Counter is an Injector that numbers every operation from 0, of all
// kinds, and fails the one with a chosen number. Run a workload once with
// a Counter that never fails to learn its Count, then once per number to
// fail each operation in turn.
type Counter struct {
	// PartialWrites makes a failed Write first write half of its buffer.
	PartialWrites bool

	failAt int64
	err    error
	n      atomic.Int64
}

// OnIndex returns a Counter that fails operation number n with err (or
// with ErrInjected if err is nil); all other operations succeed. A
// negative n only counts.
func OnIndex(n int64, err error) *Counter {
	if err == nil {
		err = ErrInjected
	}
	return &Counter{failAt: n, err: err}
}

// MaybeError implements Injector.
func (c *Counter) MaybeError(Op, string) error {
	if c.n.Add(1)-1 == c.failAt {
		return c.err
	}
	return nil
}

// ShortWrite implements ShortWriter.
func (c *Counter) ShortWrite(_ error, n int) int { return shortWrite(c.PartialWrites, n) }

// Count returns the number of operations seen so far.
func (c *Counter) Count() int64 { return c.n.Load() }

func shortWrite(partial bool, n int) int {
	if !partial {
		return 0
	}
	return n / 2
}

// KindInjector is an Injector that fails every operation of chosen kinds
// while enabled.
type KindInjector struct {
	// PartialWrites makes a failed Write first write half of its buffer.
	PartialWrites bool

	kinds   uint64 // bit i set: fail Op(i)
	err     error
	enabled atomic.Bool
}

// OnKind returns an enabled KindInjector that fails every operation of the
// given kinds with err (or with ErrInjected if err is nil).
func OnKind(err error, ops ...Op) *KindInjector {
	if err == nil {
		err = ErrInjected
	}
	k := &KindInjector{err: err}
	for _, op := range ops {
		k.kinds |= 1 << uint(op)
	}
	k.enabled.Store(true)
	return k
}

// Enable makes the injector fail operations.
func (k *KindInjector) Enable() { k.enabled.Store(true) }

// Disable lets all operations succeed until Enable.
func (k *KindInjector) Disable() { k.enabled.Store(false) }

// MaybeError implements Injector.
func (k *KindInjector) MaybeError(op Op, _ string) error {
	if k.enabled.Load() && op >= 0 && op < 64 && k.kinds&(1<<uint(op)) != 0 {
		return k.err
	}
	return nil
}

// ShortWrite implements ShortWriter.
func (k *KindInjector) ShortWrite(_ error, n int) int { return shortWrite(k.PartialWrites, n) }
