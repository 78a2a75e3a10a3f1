package engine

import (
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// The cold read path (docs/design.md, "Large-data read path").
//
// A read of a sealed (or flushed) record through the segment's mapping
// that misses the page cache is a page fault: it blocks the OS thread and
// its P until the disk answers, so with GOMAXPROCS=2 at most two disk reads
// are in flight however many goroutines read. A positioned read (pread,
// vfs.File.ReadAt) instead parks only the goroutine in a system call; the
// runtime hands the P to another goroutine, and dozens of reads reach the
// disk's queue at once. So before decoding a record from the mapping, a
// Get, View, Has or a write's probe decides (usePread) whether the
// record's first page is resident; if not, it preads the record into a
// buffer of its own.
//
// Every segment mapping is madvise(MADV_RANDOM): a fault reads only its
// page, not read_ahead_kb of neighbours (8 MiB on the test machine, which
// made each cold Get read ~2 MB). Sequential passes over a segment
// (replay, compaction) switch it to MADV_SEQUENTIAL for their duration.

// ReadMode says how reads of records in segment files reach the disk.
type ReadMode int

const (
	// ReadAuto (the default) checks, before each read of a segment file,
	// whether the record's pages are resident (a memo of pages, then
	// mincore), and preads the record if not. While the segment files total
	// at most half of physical memory it checks only a sample of reads,
	// until one finds a page missing (a cold cache after a restart, or
	// evictions): from then every read is checked until the share of reads
	// that go to the disk falls under 1% again.
	ReadAuto ReadMode = iota
	// ReadMmap always reads through the mapping (a miss is a page fault).
	ReadMmap
	// ReadPread always reads records of segment files with pread.
	ReadPread
)

// String returns the mode's name (auto, mmap, pread).
func (m ReadMode) String() string {
	switch m {
	case ReadAuto:
		return "auto"
	case ReadMmap:
		return "mmap"
	case ReadPread:
		return "pread"
	}
	return fmt.Sprintf("ReadMode(%d)", int(m))
}

// ParseReadMode parses "auto", "mmap" or "pread".
func ParseReadMode(s string) (ReadMode, error) {
	for _, m := range []ReadMode{ReadAuto, ReadMmap, ReadPread} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown read mode %q (want auto, mmap or pread)", ErrBadOptions, s)
}

// coldReads is the DB's cold-read state.
type coldReads struct {
	// limit: in ReadAuto, residency is checked only while the segment
	// files total more than limit bytes (half of physical memory; tests
	// lower it). big caches that comparison; it is refreshed at Open and
	// at each roll (noteSizeLocked), so between rolls it may lag by one
	// segment, and after compaction it stays true until the next roll.
	limit int64
	big   atomic.Bool
	// faulting: in ReadAuto for a database that fits in memory (!big), a
	// sampled read found its page missing, so every read is checked as if
	// big. checked and missed count the checks and preads since it was
	// set; every faultWindow checks, it is cleared if under 1% missed.
	// sample is faultSample (tests lower it).
	faulting atomic.Bool
	sample   uint32
	checked  atomic.Int64
	missed   atomic.Int64
	// preads counts records read with pread (Stats.PreadReads).
	preads atomic.Int64
	// mincores counts residency checks that asked the OS (residency.go).
	mincores atomic.Int64
	// reused counts writes whose unlocked probe held (coldwrite.go).
	reused atomic.Int64
	// epoch moves to forget every segment's residency bitmap
	// (residency.go); epochAt is when it last moved (Unix ns).
	epoch   atomic.Uint64
	epochAt atomic.Int64
	// probeHook, a test hook, runs between a write's unlocked probe and
	// its taking db.mu (to widen the window in which entries change).
	probeHook atomic.Pointer[func()]
}

// initColdReads sets the residency threshold from the machine's memory.
func (db *DB) initColdReads() {
	var si unix.Sysinfo_t
	db.cold.limit = 8 << 30 // if Sysinfo fails
	db.cold.sample = faultSample
	if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
		db.cold.limit = int64(uint64(si.Totalram) * uint64(si.Unit) / 2)
	}
}

// noteSizeLocked recomputes whether the segment files outgrow the page
// cache's likely share (coldReads.big). It scans the segment table, so it
// runs only at Open and at rolls. db.mu must be held (or Open running).
func (db *DB) noteSizeLocked() {
	var total int64
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			total += sf.flushed.Load()
		}
	}
	db.cold.big.Store(total > db.cold.limit)
	db.cold.epoch.Add(1) // new data may have pushed old pages out
}

// adviseSeg sets the access hint of sf's mapping and of its open file
// (which pread uses: the file's readahead is separate from the
// mapping's). A hint that fails changes nothing that is read, so the
// failure is only logged.
func (db *DB) adviseSeg(sf *segFile, a vfs.Access) {
	if sf.m != nil {
		if err := sf.m.Advise(a); err != nil {
			db.opts.Logger.Warn("marlin: madvise failed", "file", sf.name, "err", err)
		}
	}
	if sf.f != nil {
		if err := sf.f.Advise(a); err != nil {
			db.opts.Logger.Warn("marlin: fadvise failed", "file", sf.name, "err", err)
		}
	}
}

// residentProbe is how many bytes from a record's start the first
// residency check covers: a thin record's header, key and value.
const residentProbe = 64

// usePread decides whether the record at off of sf (whose readable bytes
// end at end) is read with pread rather than through the mapping. In
// ReadAuto, for a large database, it checks that the page(s) of the
// record's first residentProbe bytes are resident, and for a longer
// record (whose first page may be resident because its neighbours were
// read) the whole record, sized from its header. Each check asks the
// segment's residency memo first and mincore only for pages it does not
// know (residency.go): a mincore call is 2-4 µs here, against ~70 µs for
// the disk read whose fault it keeps from blocking a P.
func (db *DB) usePread(sf *segFile, off, end int64) bool {
	switch db.opts.ReadMode {
	case ReadMmap:
		return false
	case ReadPread:
		return true
	}
	n := min(residentProbe, end-off)
	if !db.cold.big.Load() {
		if !db.cold.faulting.Load() {
			// A database that fits in memory is usually cached: check one
			// read in faultSample, and go on checking all only once one
			// finds its page missing.
			if rand.Uint32()%db.cold.sample != 0 || db.residentMemo(sf, off, n) {
				return false
			}
			db.cold.checked.Store(0)
			db.cold.missed.Store(0)
			db.cold.faulting.Store(true)
			return true
		}
		miss := db.checkResident(sf, off, n, end)
		db.noteFaulting(miss)
		return miss
	}
	return db.checkResident(sf, off, n, end)
}

const (
	// faultSample: a database that fits in memory checks one read in
	// faultSample for a missing page (a mincore call or a memo lookup,
	// amortized to a few ns a read).
	faultSample = 256
	// faultWindow: while faulting, every faultWindow checks the share of
	// reads that went to the disk is compared with 1%.
	faultWindow = 4096
)

// noteFaulting counts one check while faulting, and clears faulting at the
// end of a window in which under 1% of reads missed.
func (db *DB) noteFaulting(miss bool) {
	if miss {
		db.cold.missed.Add(1)
	}
	if db.cold.checked.Add(1)%faultWindow != 0 {
		return
	}
	if db.cold.missed.Swap(0) < faultWindow/100 {
		db.cold.faulting.Store(false)
	}
}

// checkResident reports whether the record at off (n bytes probed) must
// be preaded: its first n bytes are not resident, or it is longer and the
// rest is not.
func (db *DB) checkResident(sf *segFile, off, n, end int64) bool {
	if !db.residentMemo(sf, off, n) {
		return true
	}
	size, ok := db.peekMapped(sf, off, end)
	if !ok || int64(size) <= n {
		return false // Decode reports a bad header
	}
	return !db.residentMemo(sf, off, min(int64(size), end-off))
}

// peekMapped reads the size of the record at off from sf's mapping (whose
// first page was found resident); a memory fault gives ok false.
func (db *DB) peekMapped(sf *segFile, off, end int64) (size int, ok bool) {
	var err error
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	return segment.PeekSize(sf.data[off:min(end, off+segment.MaxHeader)], db.lim)
}

// coldProbes reports whether a write should probe its key's candidates
// before taking db.mu (probeCold): only when reads may go to the disk.
func (db *DB) coldProbes() bool {
	switch db.opts.ReadMode {
	case ReadMmap:
		return false
	case ReadPread:
		return true
	}
	return db.cold.big.Load() || db.cold.faulting.Load()
}

// readBufs holds the buffers records are preaded into. A buffer belongs
// to one reader from readBufs.Get until it hands it back (DB.unhold);
// buffers larger than readBufMax are dropped instead of kept.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, preadChunk); return &b }}

const (
	// preadChunk is the first read of a record: up to the end of its 4 KiB
	// block, so a thin record costs one read of at most one disk block.
	preadChunk = 4 << 10
	readBufMax = 64 << 10
)

// hold says what keeps a record returned by readRecord valid: the tail
// buffer's read lock, or a pread buffer; neither means the mapping (valid
// until the operation ends). DB.unhold gives it back; it must be called
// exactly once, and the record not used afterwards.
type hold struct {
	tail bool
	buf  *[]byte
	base bool // the record is the base's (nothing is held)
}

func (db *DB) unhold(h hold) {
	if h.tail {
		db.tailMu.RUnlock()
	}
	if h.buf != nil && cap(*h.buf) <= readBufMax {
		*h.buf = (*h.buf)[:0]
		readBufs.Put(h.buf)
	}
}

// readRecord is recordAt for reads that may go to the disk: a record of a
// segment file that is not resident (usePread) is read with pread into a
// pooled buffer, so the goroutine parks instead of faulting. The caller
// must call db.unhold(h) when done with the record, without blocking in
// between if h.tail (see recordAt). Read errors are ErrIO errors naming the
// file and offset.
func (db *DB) readRecord(loc uint64) (r segment.Record, h hold, err error) {
	id, off := segment.SplitLoc(loc)
	sf := db.segs[id].Load()
	if sf == nil || off < segment.HeaderSize {
		return r, h, errStale
	}
	if fl := sf.flushed.Load(); off < fl && db.usePread(sf, off, fl) {
		bp := readBufs.Get().(*[]byte)
		r, err = db.preadRecord(sf, off, fl, bp)
		if err != nil {
			db.unhold(hold{buf: bp})
			return r, h, err
		}
		return r, hold{buf: bp}, nil
	}
	r, h.tail, err = db.recordAt(loc)
	return r, h, err
}

// preadRecord reads and decodes the record at off of sf, whose file holds
// at least end bytes, into *bp (grown as needed; the record aliases it).
// The first read runs to the end of off's 4 KiB block (or the next one if
// that leaves less than a header); a record longer than that takes a
// second read for the rest, sized from its header and bounded by end and
// by the format's limits before anything is allocated.
func (db *DB) preadRecord(sf *segFile, off, end int64, bp *[]byte) (segment.Record, error) {
	db.cold.preads.Add(1)
	first := (off/preadChunk + 1) * preadChunk
	if first-off < segment.MaxHeader {
		first += preadChunk
	}
	first = min(first, end)
	buf := growBuf((*bp)[:0], int(first-off))
	if err := db.preadFull(sf, buf, off); err != nil {
		*bp = buf
		return segment.Record{}, err
	}
	if size, ok := segment.PeekSize(buf, db.lim); ok && size > len(buf) && off+int64(size) <= end {
		n := len(buf)
		buf = growBuf(buf, size)
		if err := db.preadFull(sf, buf[n:], off+int64(n)); err != nil {
			*bp = buf
			return segment.Record{}, err
		}
	}
	*bp = buf
	db.notePread(sf, off, int64(len(buf)))
	// A header that does not fit, or a record running past end, is
	// reported by Decode as corruption at off.
	r, _, err := segment.Decode(buf, sf.gen, off, db.lim)
	return r, segment.WithFile(err, sf.name)
}

// growBuf returns b extended to n bytes, keeping its contents.
func growBuf(b []byte, n int) []byte {
	if cap(b) < n {
		nb := make([]byte, n, max(n, preadChunk))
		copy(nb, b)
		return nb
	}
	return b[:n]
}

// preadFull fills buf from offset off of sf's file. A short read means the
// file is shorter than the bytes known to be written (truncated
// underneath), which is an I/O error like a failed read: both wrap ErrIO
// and name the file and offset.
func (db *DB) preadFull(sf *segFile, buf []byte, off int64) error {
	n, err := sf.f.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s at offset %d: read of %d bytes failed after %d: %w",
		ErrIO, sf.name, off, len(buf), n, err)
}
