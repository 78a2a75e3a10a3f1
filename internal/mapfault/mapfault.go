// Package mapfault turns memory faults in reads of read-only file mappings
// into errors, for the engine's segments and the bundle reader.
//
// When the kernel cannot supply a page of a mapping (a disk returning EIO,
// or the file truncated underneath it) the access raises SIGBUS, which by
// default kills the process. A reader runs with
// debug.SetPanicOnFault(true), which makes the runtime panic instead with a
// runtime.Error that has an Addr method; a deferred function recovers the
// panic and calls Error, which recognizes that panic (and only that one)
// and builds the error naming the file and the offset. Any other panic
// must be re-raised by the caller.
package mapfault

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Error returns the error for a recovered panic value r if r is a memory
// fault, or nil. ioErr is the sentinel the error wraps (the caller's
// ErrIO), what says what was being read ("a mapped segment"), and locate
// names the file and offset of the faulting address, or returns "" if it
// knows none (locate may be nil).
func Error(r any, ioErr error, what string, locate func(addr uintptr) (file string, off int64)) error {
	re, ok := r.(runtime.Error)
	if !ok {
		return nil
	}
	a, ok := re.(interface{ Addr() uintptr })
	if !ok {
		return nil
	}
	addr := a.Addr()
	file, off := "", int64(-1)
	if locate != nil {
		file, off = locate(addr)
	}
	if file == "" {
		return fmt.Errorf("%w: memory fault at address %#x reading %s: %v", ioErr, addr, what, re)
	}
	return fmt.Errorf("%w: %s at offset %d: the mapped file could not be read (I/O error, or truncated underneath): %v",
		ioErr, file, off, re)
}

// Offset reports whether addr lies in the backing array of b (up to its
// capacity) and at which offset.
func Offset(b []byte, addr uintptr) (int64, bool) {
	if cap(b) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if addr < base || addr >= base+uintptr(cap(b)) {
		return 0, false
	}
	return int64(addr - base), true
}
