package arena

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// UnitSize is the allocation granularity of Allocator: one cache line.
const UnitSize = 64

// ErrExhausted is returned when an Allocator's reservation is used up.
var ErrExhausted = errors.New("arena: reservation exhausted")

// Allocator hands out blocks of whole 64-byte units from one large virtual
// reservation made at creation. Offsets are stable for the Allocator's
// lifetime (the reservation never moves), so a block can be named by its
// unit offset and read lock-free through Base.
//
// Memory is returned to the OS page by page: every page keeps a count of the
// live blocks overlapping it, and a page whose count drops to zero is
// released with MADV_DONTNEED. Freed blocks are kept on exact-size free
// lists and reused first. This suits the index, whose shards all grow through
// the same deterministic sequence of sizes: small blocks are freed in waves,
// whole pages empty out, and the resident size follows the live size.
//
// A freed block stays mapped (it reads as its old bytes or as zeros) until
// Close, so a lock-free reader that still looks at a block freed under it
// reads harmless data; it must detect that by other means (the index uses a
// per-shard sequence counter).
//
// Alloc and Free are safe for concurrent use; Close must not race with
// anything.
type Allocator struct {
	mem []byte // the reservation; never moves

	mu        sync.Mutex          // guards everything below
	bump      uint64              // next never-used unit
	free      map[uint32][]uint64 // unit count -> offsets of freed blocks
	pageLive  []uint32            // live blocks overlapping each page
	liveUnits uint64              // units in live blocks
	resident  int64               // pages with a live block, in bytes
}

// NewAllocator reserves up to reserveBytes of address space (at least
// minBytes, halving on refusal).
func NewAllocator(reserveBytes, minBytes int) (*Allocator, error) {
	mem, err := reserve(reserveBytes, minBytes)
	if err != nil {
		return nil, err
	}
	return &Allocator{mem: mem, free: make(map[uint32][]uint64)}, nil
}

// Base returns the start of the reservation. Unit offset u lives at
// Base()+u*UnitSize.
func (a *Allocator) Base() unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(a.mem)) }

// Capacity returns the reservation size in bytes.
func (a *Allocator) Capacity() int { return len(a.mem) }

// Alloc returns the unit offset of a zeroed block of units units.
func (a *Allocator) Alloc(units uint32) (uint64, error) {
	if units == 0 {
		return 0, fmt.Errorf("arena: zero-size alloc")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var off uint64
	fromFree := false
	if l := a.free[units]; len(l) > 0 {
		off = l[len(l)-1]
		a.free[units] = l[:len(l)-1]
		fromFree = true
	} else {
		if (a.bump+uint64(units))*UnitSize > uint64(len(a.mem)) {
			return 0, ErrExhausted
		}
		off = a.bump
		a.bump += uint64(units)
	}
	a.adjustPages(off, units, +1)
	a.liveUnits += uint64(units)
	if fromFree {
		// A reused block may hold old bytes where its pages were not released.
		clear(a.block(off, units))
	}
	return off, nil
}

// Free hands a block back. The caller must not write to it afterwards.
func (a *Allocator) Free(off uint64, units uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.free[units] = append(a.free[units], off)
	a.liveUnits -= uint64(units)
	a.adjustPages(off, units, -1)
}

func (a *Allocator) block(off uint64, units uint32) []byte {
	return a.mem[off*UnitSize : (off+uint64(units))*UnitSize]
}

// adjustPages adds delta to the live count of every page the block overlaps,
// releasing pages whose count reaches zero.
func (a *Allocator) adjustPages(off uint64, units uint32, delta int) {
	ps := uint64(PageSize)
	first := off * UnitSize / ps
	last := ((off+uint64(units))*UnitSize - 1) / ps
	for uint64(len(a.pageLive)) <= last {
		a.pageLive = append(a.pageLive, 0)
	}
	relStart, relEnd := uint64(0), uint64(0) // run of pages to release
	for p := first; p <= last; p++ {
		if delta > 0 {
			if a.pageLive[p] == 0 {
				a.resident += int64(ps)
			}
			a.pageLive[p]++
			continue
		}
		a.pageLive[p]--
		if a.pageLive[p] == 0 {
			a.resident -= int64(ps)
			if relEnd == p && relEnd != relStart {
				relEnd = p + 1
			} else {
				if relEnd > relStart {
					release(a.mem[relStart*ps : relEnd*ps])
				}
				relStart, relEnd = p, p+1
			}
		}
	}
	if relEnd > relStart {
		release(a.mem[relStart*ps : relEnd*ps])
	}
}

// AllocStats describes an Allocator's memory.
type AllocStats struct {
	LiveBytes     int64 // bytes in live blocks
	ResidentBytes int64 // bytes of pages holding a live block (what RSS sees)
	ReservedBytes int64 // address space reserved
	UsedBytes     int64 // high-water mark of the reservation
}

// Stats reports the Allocator's memory use.
func (a *Allocator) Stats() AllocStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AllocStats{
		LiveBytes:     int64(a.liveUnits) * UnitSize,
		ResidentBytes: a.resident,
		ReservedBytes: int64(len(a.mem)),
		UsedBytes:     int64(a.bump) * UnitSize,
	}
}

// Close unmaps the reservation. No reader may touch it afterwards.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mem == nil {
		return nil
	}
	err := Unmap(a.mem)
	a.mem = nil
	a.free = nil
	a.pageLive = nil
	return err
}
