// Package vfs is the small filesystem interface through which Marlin does
// all of its file I/O. The engine never calls package os for data files
// directly: tests swap in an in-memory filesystem (NewMem) that can simulate
// power loss, or wrap any FS with error injection.
//
// The interface is deliberately narrow: it holds exactly the operations the
// engine's durability protocol depends on (append, positional read, sync,
// truncate, rename, directory sync, read-only mapping, an exclusive lock),
// so that every one of them can be faulted in tests.
package vfs

import (
	"io"
	"os"
)

// FS is a filesystem. Names are slash-separated paths as understood by the
// implementation; the OS implementation takes them as they are.
type FS interface {
	// Create creates the named file for reading and writing, truncating it
	// if it exists. The creation is durable only after SyncDir of its
	// directory.
	Create(name string) (File, error)
	// Open opens the named file read-only.
	Open(name string) (File, error)
	// OpenReadWrite opens an existing file for reading and writing without
	// truncating it. Writes through File.Write append at the end of the file.
	OpenReadWrite(name string) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Rename atomically replaces newname with oldname. Durable only after
	// SyncDir of the directory.
	Rename(oldname, newname string) error
	// Link creates newname as a hard link to oldname (used by checkpoints).
	Link(oldname, newname string) error
	// MkdirAll creates a directory and any missing parents.
	MkdirAll(dir string, perm os.FileMode) error
	// List returns the names (not paths) of the entries of dir, sorted.
	List(dir string) ([]string, error)
	// Stat describes the named file.
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes the creations, renames and removals of entries in dir
	// durable.
	SyncDir(dir string) error
	// Lock takes an exclusive, advisory, process-wide lock on the named
	// file, creating it if needed. It fails at once (never blocks) if
	// another holder has it. Closing the returned Closer releases it.
	Lock(name string) (io.Closer, error)
	// RLock takes a shared lock on the named file: any number of RLock
	// holders may coexist, but not with a Lock holder. It fails at once if
	// a Lock holder has it. If the file does not exist, nobody can hold
	// Lock on it, and RLock succeeds without creating it (read-only users
	// never modify the directory).
	RLock(name string) (io.Closer, error)
}

// File is an open file.
//
// Write appends at the end of the file (the engine only ever appends).
// ReadAt may run concurrently with Write and with other ReadAt calls.
type File interface {
	io.Writer
	io.ReaderAt
	io.Closer
	// Sync makes the file's data durable. A failed Sync must never be
	// retried by the caller: the data it covered may be lost.
	Sync() error
	// Truncate changes the size of the file.
	Truncate(size int64) error
	// Size returns the current size of the file.
	Size() (int64, error)
	// Map returns a read-only view of the first length bytes of the file
	// address space. length may exceed the current size: bytes beyond the
	// size must not be read until they have been written by Write (for the
	// OS implementation, reading a page wholly past the end of the file
	// raises SIGBUS). Bytes appended later by Write at offsets below length
	// become visible through the view. The view stays valid until the
	// Mapping is closed, even after the File is closed.
	Map(length int) (Mapping, error)
	// Advise tells the OS how ReadAt will read the file (posix_fadvise on
	// the open file): with AccessRandom a read fetches only what it asks
	// for, no readahead. A hint: it never changes what is read.
	Advise(a Access) error
}

// Mapping is a read-only view of a file's bytes.
type Mapping interface {
	// Bytes returns the view. Its length is the length given to Map. The
	// slice must not be written to and must not be used after Close.
	Bytes() []byte
	// Close releases the view.
	Close() error
	// Advise tells the OS how the view will be read. It is a hint: it
	// never changes what is read, and implementations without paging
	// ignore it. Segment mappings are AccessRandom (see docs/design.md,
	// "Large-data read path").
	Advise(a Access) error
	// Resident reports whether every page holding bytes [off, off+n) of
	// the view is in memory, so that reading them will not wait for the
	// disk. It is a snapshot (a page may be evicted right after); an
	// error means it could not tell. In-memory implementations always
	// report true.
	Resident(off, n int) (bool, error)
}

// Access is an access-pattern hint for Mapping.Advise.
type Access int

const (
	// AccessNormal is the OS default: faults read ahead.
	AccessNormal Access = iota
	// AccessRandom: reads are random; a fault (or a read) fetches only
	// its page(s), with no readahead (MADV_RANDOM, FADV_RANDOM).
	AccessRandom
	// AccessSequential: reads go in order; read ahead aggressively
	// (MADV_SEQUENTIAL, FADV_SEQUENTIAL).
	AccessSequential
)
