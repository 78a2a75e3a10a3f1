package bundle

import (
	"runtime/debug"

	"github.com/marlinkv/marlin/internal/mapfault"
)

// Fault-safe reads of the mapping.
//
// A bundle is read through a read-only mmap. When the kernel cannot supply
// a page (a disk returning EIO, or the file truncated underneath the
// mapping) the access raises SIGBUS, which by default kills the process.
// Every method that reads the mapping therefore runs with
// debug.SetPanicOnFault(true), which turns the fault into a panic carrying
// a runtime.Error with an Addr method, and defers catchFault, which turns
// that panic (and only that one) into an error wrapping ErrIO naming the
// file and the offset; any other panic is re-raised unchanged. This is the
// engine's pattern (engine/faultread.go); both use package mapfault.
//
//	defer r.catchFault(debug.SetPanicOnFault(true), &err)
//
// SetPanicOnFault is per goroutine and cheap; catchFault restores the
// previous setting, so nesting is safe. No lock is held across a guarded
// read (the Reader takes none).
//
// A value returned by Get aliases the mapping: reading it after Get
// returned is outside the guard. Get has read every byte of it (its CRC
// check), so such a fault needs the file to shrink in between; callers that
// must survive even that use AppendValue, which copies under the guard.

// catchFault restores the panic-on-fault setting to old and converts a
// memory fault into an ErrIO error in *err. Deferred directly.
func (r *Reader) catchFault(old bool, err *error) {
	debug.SetPanicOnFault(old)
	rec := recover()
	if rec == nil {
		return
	}
	ferr := faultError(rec, r.name, r.m)
	if ferr == nil {
		panic(rec)
	}
	*err = ferr
}

// faultError returns the error for a recovered panic value if it is a
// memory fault, or nil. data is the mapping, to name the offset.
func faultError(rec any, name string, data []byte) error {
	return mapfault.Error(rec, ErrIO, name, func(addr uintptr) (string, int64) {
		if off, ok := mapfault.Offset(data, addr); ok {
			return name, off
		}
		return "", -1
	})
}

// Offset reports whether addr lies in the bundle's mapping and at which
// offset of the file: for a caller whose own fault handler (such as the
// engine's, reading a base bundle) must name the file.
func (r *Reader) Offset(addr uintptr) (int64, bool) { return mapfault.Offset(r.m, addr) }
