package bundle

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/arena"
)

// runBuffer holds the pairs of the add phase outside the Go heap,
// partitioned by the top bits of their hash, so that sorting them and
// reading them back in hash order stays within one partition's memory at
// a time (a few MiB: the caches' reach) instead of jumping over the whole
// buffer once per pair.
//
// A pair is stored as a run record (run.go: hash, key length, value
// length, key, value) in its partition's current chunk; a partition's
// chunks are carved from mem one after another, so its records lie at
// increasing offsets in the order they were added. To read a partition in
// order, its records' (hash, offset) items are gathered into items and
// sorted: equal hashes keep the order added.
//
// Memory: mem and the items' region are reservations of limit bytes each;
// what is touched, the carved chunks plus two arrays of items as long as
// the largest partition (the sort's source and destination), is kept at
// most limit (add checks). Both belong to the Builder
// until release; record slices handed out are valid until reset or
// release.
type runBuffer struct {
	mem      []byte // reservation; mem[:carved] is chunks
	carved   int
	itemsRes []byte // reservation behind items
	items    []item // one partition's items while it is read
	parts    []partition
	shift    uint // the partition of hash h is h >> shift (64: one partition)
	chunk    int  // a chunk's usual size
	n        int  // records held
	maxPart  int  // records in the largest partition
	limit    int
	counts   []int32 // sortPart's bucket counts (Go heap, at most 4 MiB)
}

type partition struct {
	chunks []span // in the order carved
	n      int
}

// span is a chunk: mem[off:cap], used up to end.
type span struct{ off, end, cap int }

// item is a record of the buffer: its hash and offset in mem. Sorting by
// (h, off) puts equal hashes in the order they were added.
type item struct{ h, off uint64 }

const (
	itemSize     = int(unsafe.Sizeof(item{}))
	runChunk     = 64 << 10
	maxPartsBits = 8
)

func newRunBuffer(limit int) (*runBuffer, error) {
	mem, err := arena.Reserve(limit, limit)
	if err != nil {
		return nil, err
	}
	res, err := arena.Reserve(limit, limit)
	if err != nil {
		_ = arena.Unmap(mem)
		return nil, err
	}
	// Huge pages where the kernel has them: fewer faults while filling,
	// fewer TLB misses while reading back. Only a hint.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	_ = unix.Madvise(res, unix.MADV_HUGEPAGE)
	// Partitions: as many as keep their chunks' slack (one partly filled
	// chunk each) within a quarter of the limit, at most 256.
	pbits := 0
	if q := limit / (4 * runChunk); q > 1 {
		pbits = min(bits.Len(uint(q))-1, maxPartsBits)
	}
	return &runBuffer{
		mem:      mem,
		itemsRes: res,
		items:    unsafe.Slice((*item)(unsafe.Pointer(unsafe.SliceData(res))), limit/itemSize),
		parts:    make([]partition, 1<<pbits),
		shift:    uint(64 - pbits),
		chunk:    runChunk,
		limit:    limit,
	}, nil
}

// runRecordLen is the size of a pair's run record.
func runRecordLen(klen, vlen int) int {
	return 8 + uvarintLen(uint64(klen)) + uvarintLen(uint64(vlen)) + klen + vlen
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// add stores a pair if it fits in the limit, and reports whether it did.
func (rb *runBuffer) add(h uint64, key, value []byte) bool {
	need := runRecordLen(len(key), len(value))
	p := &rb.parts[h>>rb.shift]
	if items := 2 * max(rb.maxPart, p.n+1) * itemSize; len(p.chunks) == 0 || p.chunks[len(p.chunks)-1].end+need > p.chunks[len(p.chunks)-1].cap {
		size := max(rb.chunk, need)
		if rb.carved+size+items > rb.limit {
			return false
		}
		p.chunks = append(p.chunks, span{rb.carved, rb.carved, rb.carved + size})
		rb.carved += size
	} else if rb.carved+items > rb.limit {
		return false
	}
	c := &p.chunks[len(p.chunks)-1]
	b := binary.LittleEndian.AppendUint64(rb.mem[c.end:c.end], h)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = append(b, key...)
	b = append(b, value...)
	c.end += len(b)
	p.n++
	rb.n++
	rb.maxPart = max(rb.maxPart, p.n)
	return true
}

// record returns the run record at off, and its key and value.
func (rb *runBuffer) record(off uint64) (rec, key, value []byte) {
	b := rb.mem[off:]
	klen, a := binary.Uvarint(b[8:])
	vlen, c := binary.Uvarint(b[8+a:])
	k := uint64(8 + a + c)
	return b[:k+klen+vlen], b[k : k+klen], b[k+klen : k+klen+vlen]
}

// sortPart gathers partition p's items and sorts them by (hash, offset);
// the result is valid until the next call. The items are gathered in
// offset order, then a stable counting sort by the hash bits below the
// partition's puts them into about one bucket per item (the hashes are
// uniform), and each bucket is finished by insertion (a few items) or
// pdqsort (more: hashes that cluster, which only equal hashes or a test's
// forced hash make).
func (rb *runBuffer) sortPart(p int) []item {
	n := rb.parts[p].n
	items, tmp := rb.items[:0:n], rb.items[n:2*n]
	for _, c := range rb.parts[p].chunks {
		for off := c.off; off < c.end; {
			rec, _, _ := rb.record(uint64(off))
			items = append(items, item{binary.LittleEndian.Uint64(rec), uint64(off)})
			off += len(rec)
		}
	}
	if n < 32 {
		insertionSort(items)
		return items
	}
	bb := uint(min(bits.Len(uint(n-1)), 20)) // 2^bb >= n buckets, at most 2^20
	shift := 64 - bb
	pb := 64 - rb.shift // the partition's bits, equal in every item
	if cap(rb.counts) < 1<<bb+1 {
		rb.counts = make([]int32, 1<<bb+1)
	}
	counts := rb.counts[:1<<bb+1]
	clear(counts)
	for _, it := range items {
		counts[(it.h<<pb)>>shift+1]++
	}
	for b := 1; b < len(counts); b++ {
		counts[b] += counts[b-1]
	}
	for _, it := range items {
		b := (it.h << pb) >> shift
		tmp[counts[b]] = it
		counts[b]++
	}
	// counts[b] is now the end of bucket b, and bucket b starts at the
	// end of bucket b-1.
	start := int32(0)
	for _, end := range counts[:1<<bb] {
		if bucket := tmp[start:end]; len(bucket) <= 16 {
			insertionSort(bucket)
		} else {
			slices.SortFunc(bucket, cmpItem)
		}
		start = end
	}
	return tmp
}

// insertionSort sorts a few items by (hash, offset), stably.
func insertionSort(items []item) {
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && cmpItem(items[j], items[j-1]) < 0; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
}

func cmpItem(a, b item) int {
	switch {
	case a.h < b.h:
		return -1
	case a.h > b.h:
		return 1
	case a.off < b.off:
		return -1
	case a.off > b.off:
		return 1
	}
	return 0
}

// touched is how many bytes of the buffer are in use.
func (rb *runBuffer) touched() int { return rb.carved + 2*rb.maxPart*itemSize }

func (rb *runBuffer) reset() {
	for i := range rb.parts {
		rb.parts[i] = partition{chunks: rb.parts[i].chunks[:0]}
	}
	rb.carved, rb.n, rb.maxPart = 0, 0, 0
}

func (rb *runBuffer) release() {
	_ = arena.Unmap(rb.mem)
	_ = arena.Unmap(rb.itemsRes)
	rb.mem, rb.itemsRes, rb.items, rb.parts = nil, nil, nil, nil
}

// memSource yields the buffer's records in (hash, order added) order,
// one partition after another. The slices alias the buffer and stay valid
// until it is reset or released.
type memSource struct {
	rb    *runBuffer
	p     int // next partition to read
	items []item
	i     int
}

func (s *memSource) nextRecord() (h uint64, rec, key, value []byte, ok bool) {
	for s.i == len(s.items) {
		if s.p == len(s.rb.parts) {
			return 0, nil, nil, nil, false
		}
		s.items, s.i = s.rb.sortPart(s.p), 0
		s.p++
	}
	it := s.items[s.i]
	s.i++
	rec, key, value = s.rb.record(it.off)
	return it.h, rec, key, value, true
}

func (s *memSource) next() (uint64, []byte, []byte, bool, error) {
	h, _, k, v, ok := s.nextRecord()
	return h, k, v, ok, nil
}
