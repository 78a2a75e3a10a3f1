// Package arena provides memory outside the Go heap: anonymous mmap'd
// regions that the garbage collector never scans and never moves.
//
// Marlin keeps everything whose size grows with the key count here (the
// index's slot arrays, carved from a Reserve'd range by the index's slab
// allocator) and its large I/O buffers (segment write buffers, from Map), so
// the Go heap stays a few megabytes at any key count.
//
// Ownership: memory returned by this package belongs to the caller until it
// hands it back with Unmap. Pointers into it must never be stored in Go heap
// objects that outlive that, and the memory must never hold Go pointers (the
// GC cannot see them).
package arena

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// PageSize is the granularity at which memory is returned to the OS.
var PageSize = unix.Getpagesize()

// UnitSize is the granularity of the index's slot blocks: one cache line.
const UnitSize = 64

// Map returns n bytes of zeroed anonymous memory outside the Go heap.
// The caller owns it until Unmap.
func Map(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("arena: bad size %d", n)
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("arena: mmap %d bytes: %w", n, err)
	}
	return b, nil
}

// Unmap releases memory from Map. b must be exactly the slice Map returned.
func Unmap(b []byte) error {
	if b == nil {
		return nil
	}
	return unix.Munmap(b)
}

// reserve maps a large virtual range without committing memory. Pages
// become resident only when touched. It halves the request until the kernel
// accepts it (strict overcommit settings refuse huge reservations), but
// never below min.
func reserve(want, min int) ([]byte, error) {
	var lastErr error
	for n := want; n >= min; n /= 2 {
		b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
		if err == nil {
			return b, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("arena: reserve %d bytes: %w", min, lastErr)
}

// release returns whole pages to the OS; they read as zeros afterwards.
func release(b []byte) {
	if len(b) > 0 {
		_ = unix.Madvise(b, unix.MADV_DONTNEED)
	}
}

// Reserve maps up to want bytes of address space without committing
// memory (halving the request down to min if the OS refuses). Pages become
// resident when touched and can be handed back with Release. Unmap it when
// done.
func Reserve(want, min int) ([]byte, error) { return reserve(want, min) }

// Populate makes the pages of b resident and writable in one call
// (MADV_POPULATE_WRITE), which is cheaper than faulting them in one by one
// on first write: about half the time on the reference VM, where first
// touches run at 200 to 400 MB/s. It is only a hint: on kernels without
// it (before 5.14) nothing happens. b should be page-aligned.
func Populate(b []byte) {
	if len(b) > 0 {
		_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE)
	}
}

// Release returns the pages of b to the OS; they read as zeros afterwards
// and become resident again when written. b should be page-aligned.
func Release(b []byte) { release(b) }
