package engine

import (
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/arena"
)

// Residency memo. mincore costs a system call per read (2-4 µs on the
// test VM, measured by vfs.BenchmarkResident: about twice a whole cached
// Get), which for a large database whose hot set is cached would triple
// the cost of hot reads. So each segment keeps a bitmap of the pages a
// read recently found resident (by mincore, or because pread just brought
// them in); a read whose pages are all marked skips mincore and reads
// through the mapping.
//
// The bits are hints and go stale: a page can be evicted after it was
// marked. All bitmaps are forgotten together when db.cold.epoch moves:
// at each segment roll (new data entered the page cache) and, on the
// pread path, when residencyTTL passed since the last move. A read of a
// stale bit faults through the mapping: one page (MADV_RANDOM), blocking
// its thread, as every read did before the cold path existed. Hot pages,
// the ones marked most, are also the ones the kernel keeps.
//
// Memory: one bit per 4 KiB page of a segment's mapping (4 KiB for a
// 128 MiB segment), allocated at the first check of the segment, only
// in ReadAuto and only once the database is large (coldReads.big) or a
// sampled read found a page missing (coldReads.faulting).

// residencyTTL bounds how long a page's mark is trusted while preads go on.
const residencyTTL = time.Second

// resMap is one segment's residency bitmap. epoch is the db.cold.epoch
// the bits belong to; a reader that finds it behind clears the bits
// (racing readers may see some bits cleared and some not: only hints).
type resMap struct {
	epoch atomic.Uint64
	bits  []atomic.Uint64
}

// resMapOf returns sf's bitmap for the current epoch, allocating it at
// the first use.
func (db *DB) resMapOf(sf *segFile) *resMap {
	cur := db.cold.epoch.Load()
	rm := sf.res.Load()
	if rm == nil {
		pages := (len(sf.data) + arena.PageSize - 1) / arena.PageSize
		rm = &resMap{bits: make([]atomic.Uint64, (pages+63)/64)}
		rm.epoch.Store(cur)
		if !sf.res.CompareAndSwap(nil, rm) {
			rm = sf.res.Load()
		}
	}
	if e := rm.epoch.Load(); e != cur && rm.epoch.CompareAndSwap(e, cur) {
		for i := range rm.bits {
			rm.bits[i].Store(0)
		}
	}
	return rm
}

// pages returns the page range [p0, p1] holding bytes [off, off+n), n > 0.
func pages(off, n int64) (p0, p1 int) {
	return int(off / int64(arena.PageSize)), int((off + n - 1) / int64(arena.PageSize))
}

// known reports whether every page in [p0, p1] is marked resident.
func (rm *resMap) known(p0, p1 int) bool {
	for p := p0; p <= p1; p++ {
		if p/64 >= len(rm.bits) || rm.bits[p/64].Load()&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

// mark marks pages [p0, p1] resident.
func (rm *resMap) mark(p0, p1 int) {
	for p := p0; p <= p1 && p/64 < len(rm.bits); p++ {
		if w := &rm.bits[p/64]; w.Load()&(1<<(p%64)) == 0 {
			w.Or(1 << (p % 64))
		}
	}
}

// residentMemo reports whether bytes [off, off+n) of sf are resident,
// from the bitmap if it knows, else from mincore (marking what it finds).
// A failed mincore counts as not resident.
func (db *DB) residentMemo(sf *segFile, off, n int64) bool {
	rm := db.resMapOf(sf)
	p0, p1 := pages(off, n)
	if rm.known(p0, p1) {
		return true
	}
	db.cold.mincores.Add(1)
	if ok, err := sf.m.Resident(int(off), int(n)); err != nil || !ok {
		return false
	}
	rm.mark(p0, p1)
	return true
}

// notePread records that a pread brought bytes [off, off+n) of sf into the
// page cache, and moves the epoch if residencyTTL has passed (preads are
// when the cache's contents change).
func (db *DB) notePread(sf *segFile, off, n int64) {
	if db.opts.ReadMode != ReadAuto || n <= 0 {
		return
	}
	now := time.Now().UnixNano()
	if last := db.cold.epochAt.Load(); now-last > int64(residencyTTL) && db.cold.epochAt.CompareAndSwap(last, now) {
		db.cold.epoch.Add(1)
	}
	p0, p1 := pages(off, n)
	db.resMapOf(sf).mark(p0, p1)
}
