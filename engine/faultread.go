package engine

import (
	"runtime/debug"

	"github.com/marlinkv/marlin/internal/mapfault"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Fault-safe reads of mapped segments.
//
// Sealed segments (and the flushed part of the active one) are read through
// a read-only mmap. When the kernel cannot supply a page (a disk returning
// EIO, or the file truncated underneath the mapping) the access raises
// SIGBUS, which by default kills the process. Every read of mapped segment
// bytes therefore runs with debug.SetPanicOnFault(true): the runtime turns
// the fault into a panic carrying a runtime.Error with an Addr method, and a
// deferred catchFault converts that panic (and only that panic) into an
// error wrapping ErrIO that names the segment file and the offset. Any
// other panic is re-raised unchanged.
//
// The pattern, in a function with a named error result err:
//
//	defer db.catchFault(debug.SetPanicOnFault(true), &err)
//
// SetPanicOnFault is per goroutine and cheap (it swaps a flag on the
// goroutine); catchFault restores the previous value, so nesting is safe
// and callers that set it themselves keep their setting.
//
// What must not be held across a guarded read: a fault unwinds the stack,
// so locks taken without defer between the guard and the read would stay
// held. Guarded regions therefore either hold no lock or release theirs
// with defer (index.Put does).

// catchFault restores the goroutine's panic-on-fault setting to old and, if
// the function it is deferred in panicked with a memory fault, stores an
// ErrIO error naming the faulting file and offset in *err. Other panics are
// re-raised. It must be called directly by defer (recover only works
// there).
func (db *DB) catchFault(old bool, err *error) {
	debug.SetPanicOnFault(old)
	r := recover()
	if r == nil {
		return
	}
	if ferr := faultError(r, db.locateAddr); ferr != nil {
		*err = ferr
		return
	}
	panic(r)
}

// catchMappedFault restores the panic-on-fault setting to old and converts
// a memory fault while reading data (a mapping of file name) into an ErrIO
// error; other panics are re-raised. Deferred directly.
func catchMappedFault(old bool, name string, data []byte, err *error) {
	debug.SetPanicOnFault(old)
	r := recover()
	if r == nil {
		return
	}
	ferr := faultError(r, func(addr uintptr) (string, int64) {
		if off, ok := addrIn(data, addr); ok {
			return name, off
		}
		return "", -1
	})
	if ferr == nil {
		panic(r)
	}
	*err = ferr
}

// faultError returns the error for a recovered panic value r if r is a
// memory fault, or nil (package mapfault).
func faultError(r any, locate func(addr uintptr) (string, int64)) error {
	return mapfault.Error(r, ErrIO, "a mapped segment", locate)
}

// locateAddr finds the open segment (or the base bundle) whose mapping
// holds addr. It runs only
// after a fault, so a linear scan of the segment table is fine.
func (db *DB) locateAddr(addr uintptr) (string, int64) {
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil {
			continue
		}
		if off, ok := addrIn(sf.data, addr); ok {
			return sf.name, off
		}
	}
	if b := db.base.Load(); b != nil {
		if off, ok := b.r.Offset(addr); ok {
			return b.path, off
		}
	}
	return "", -1
}

// addrIn reports whether addr lies in the backing array of b (up to its
// capacity) and at which offset.
func addrIn(b []byte, addr uintptr) (int64, bool) { return mapfault.Offset(b, addr) }

// decodeMapped decodes the record at off of sf's mapping, whose readable
// part ends at end, converting a memory fault into an error. The record's
// key and value alias the mapping.
func (db *DB) decodeMapped(sf *segFile, off, end int64) (r segment.Record, size int, err error) {
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	r, size, err = segment.Decode(sf.data[off:end], sf.gen, off, db.lim)
	return r, size, segment.WithFile(err, sf.name)
}

// checkMapped runs segment.Check over sf's flushed bytes, converting a
// memory fault into an error.
func (db *DB) checkMapped(sf *segFile) (probs []segment.Problem, err error) {
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	return segment.Check(sf.data[:sf.flushed.Load()], sf.gen, db.lim, nil), nil
}

// replaySegmentSafe is replaySegment with memory faults (a segment that
// cannot be read) returned as errors instead of killing the process.
func (db *DB) replaySegmentSafe(sf *segFile, mayBeTorn bool, from, acct int64) (end int64, err error) {
	// Replay reads the segment in order: read ahead meanwhile.
	db.adviseSeg(sf, vfs.AccessSequential)
	defer db.adviseSeg(sf, vfs.AccessRandom)
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	return db.replaySegment(sf, mayBeTorn, from, acct)
}
