package bundle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/vfs"
)

// OpenOptions configure Open. The zero value (or nil) is the default.
type OpenOptions struct {
	// VerifyEntries checks the entry section's CRC-32C at Open. It reads
	// the whole section (16 bytes per key, the part meant to stay in RAM)
	// once. Without it, a damaged entry hash can make its key read as
	// absent (every other damaged field is an error at lookup); with it,
	// such damage fails Open. Verify checks everything.
	VerifyEntries bool
}

// Reader is an open bundle. Its methods may be called from any number of
// goroutines at once, except Close, which must not run concurrently with
// any other method (the caller orders them, as with a file). A Reader
// holds no Go memory that grows with the entry count: the file is mapped
// (read-only, shared), and a lookup allocates nothing.
type Reader struct {
	name string
	mp   vfs.Mapping // owns m until Close
	m    []byte      // the whole file; never written
	f    *footer
	// Sections of m, sliced once at Open after the footer's layout was
	// checked against the file size; valid until Close.
	data   []byte
	ents   []byte
	fences []byte
	n      int
	k      uint
	closed atomic.Bool
}

// Open maps the bundle at path (through fs; nil: vfs.Default) read-only.
// It checks the prefix, the footer (its CRC, every field and the layout
// against the file's size) and the fence section (its CRC and order):
// O(n / 64) work, about 0.125 bytes per key read. The entry and data
// sections are read only by lookups (see OpenOptions.VerifyEntries and
// Verify).
func Open(fs vfs.FS, path string, o *OpenOptions) (r *Reader, err error) {
	if fs == nil {
		fs = vfs.Default
	}
	if o == nil {
		o = &OpenOptions{}
	}
	file, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close() // the mapping outlives the file
	size, err := file.Size()
	if err != nil {
		return nil, err
	}
	if size < prefixSize+footerSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, shorter than a prefix and a footer", ErrCorrupt, path, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%w: %s: %d bytes cannot be mapped", ErrTooLarge, path, size)
	}
	var buf [footerSize]byte
	if err := readFull(file, buf[:prefixSize], 0); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := checkPrefix(buf[:prefixSize]); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	if err := readFull(file, buf[:], size-footerSize); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	f, err := decodeFooter(buf[:], uint64(size))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	mp, err := file.Map(int(size))
	if err != nil {
		return nil, err
	}
	m := mp.Bytes()
	// decodeFooter checked fileSize == size and the layout against the
	// counts, so these slices lie inside m, in order, without overlap.
	r = &Reader{
		name:   path,
		mp:     mp,
		m:      m,
		f:      f,
		data:   m[dataOff : dataOff+f.dataLen],
		ents:   m[f.entriesOff:f.fencesOff()],
		fences: m[f.fencesOff() : f.fencesOff()+fenceSize*f.fenceCount()],
		n:      int(f.count),
		k:      uint(f.fenceBits),
	}
	_ = mp.Advise(vfs.AccessRandom) // a hint: lookups read a page or two each
	if err := r.checkOpen(o); err != nil {
		mp.Close()
		return nil, err
	}
	return r, nil
}

// readFull reads len(b) bytes at off.
func readFull(f vfs.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = errors.New("short read")
	}
	return err
}

// checkOpen checks the fence section (CRC, first and last fence, order)
// and, if asked, the entry section's CRC.
func (r *Reader) checkOpen(o *OpenOptions) (err error) {
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	if got := crc32.Checksum(r.fences, castagnoli); got != r.f.fencesCRC {
		return r.corrupt("fence section checksum %#08x, footer says %#08x", got, r.f.fencesCRC)
	}
	if err := r.checkFences(); err != nil {
		return err
	}
	if o.VerifyEntries {
		if got := crc32.Checksum(r.ents, castagnoli); got != r.f.entriesCRC {
			return r.corrupt("entry section checksum %#08x, footer says %#08x", got, r.f.entriesCRC)
		}
	}
	return nil
}

// checkFences checks that the fences start at 0, end at n and never
// decrease.
func (r *Reader) checkFences() error {
	prev := uint64(0)
	for b := range int(r.f.fenceCount()) {
		v := binary.LittleEndian.Uint64(r.fences[b*fenceSize:])
		if v < prev || v > uint64(r.n) || (b == 0 && v != 0) {
			return r.corrupt("fence %d is %d (previous %d, %d entries)", b, v, prev, r.n)
		}
		prev = v
	}
	if prev != uint64(r.n) {
		return r.corrupt("last fence is %d, want the entry count %d", prev, r.n)
	}
	return nil
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrCorrupt, r.name}, args...)...)
}

// Get returns the value stored for key, or ErrNotFound. The value is a
// slice of the read-only mapping: no copy, no allocation. It is valid until
// Close and must not be modified (writing to it faults). Get checks the
// record's CRC, so it reads every byte of the value; AppendValue copies
// instead. In an approximate bundle, a key that was never added is
// reported present, with some other key's value, with the probability
// given by Info.FalsePositiveRate.
func (r *Reader) Get(key []byte) (v []byte, err error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	v, _, err = r.find(key, true)
	return v, err
}

// AppendValue appends the value stored for key to dst and returns the
// extended slice; with enough capacity in dst it does not allocate. On an
// error dst is returned unchanged.
func (r *Reader) AppendValue(dst, key []byte) (out []byte, err error) {
	out = dst
	if r.closed.Load() {
		return dst, ErrClosed
	}
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	v, _, err := r.find(key, true)
	if err != nil {
		return dst, err
	}
	return append(dst, v...), nil
}

// Has reports whether key is in the bundle. In exact mode it reads and
// compares the key but not the value; in approximate mode it reads only
// the entry section (and is wrong for absent keys with the probability
// Info.FalsePositiveRate).
func (r *Reader) Has(key []byte) (ok bool, err error) {
	if r.closed.Load() {
		return false, ErrClosed
	}
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	_, _, err = r.find(key, false)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, err
}

// Probes returns how many entries a lookup of key reads (the search and
// the scan of entries with its hash), for benchmarks and tests.
func (r *Reader) Probes(key []byte) (n int, err error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	_, n, err = r.find(key, true)
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	return n, err
}

// find looks key up. With wantValue it returns the value after checking
// its record's CRC; without, only whether the key is there. Every offset
// and length read from the file is checked before it is used to slice.
func (r *Reader) find(key []byte, wantValue bool) (value []byte, probes int, err error) {
	h := hashKey(key, r.f.seed)
	lo, hi, err := r.bucket(h)
	if err != nil {
		return nil, 0, err
	}
	i, probes := lowerBound(r.ents, lo, hi, h, r.k)
	var check uint16
	haveCheck := false
	for ; i < hi; i++ {
		probes++
		e := r.ents[i*entrySize : (i+1)*entrySize]
		if binary.LittleEndian.Uint64(e) != h {
			break
		}
		w := binary.LittleEndian.Uint64(e[8:])
		off, aux := w&offMask, uint16(w>>offBits)
		if r.f.approximate() {
			if !haveCheck {
				check, haveCheck = checkOf(key, r.f.checkSeed), true
			}
			if aux != check {
				continue
			}
			if !wantValue {
				return nil, probes, nil
			}
			rec, err := r.record(i, off, 0)
			if err != nil {
				return nil, probes, err
			}
			v := rec[:len(rec)-recCRCSize]
			if err := r.checkCRC(i, h, aux, nil, v, rec); err != nil {
				return nil, probes, err
			}
			return v, probes, nil
		}
		klen := int(aux)
		rec, err := r.record(i, off, klen)
		if err != nil {
			return nil, probes, err
		}
		if !bytes.Equal(rec[:klen], key) {
			// Another key with the same 64-bit hash (a true collision),
			// or damage: tell them apart by hashing the stored key.
			if hashKey(rec[:klen], r.f.seed) != h {
				return nil, probes, r.corrupt("entry %d: its key does not hash to its hash", i)
			}
			continue
		}
		if !wantValue {
			return nil, probes, nil
		}
		v := rec[klen : len(rec)-recCRCSize]
		if err := r.checkCRC(i, h, aux, rec[:klen], v, rec); err != nil {
			return nil, probes, err
		}
		return v, probes, nil
	}
	return nil, probes, ErrNotFound
}

// bucket returns the entries [lo, hi) whose hashes share h's top k bits,
// from two adjacent fences, checked: 0 <= lo <= hi <= n.
func (r *Reader) bucket(h uint64) (int, int, error) {
	b := int(h >> (64 - r.k)) // a shift by 64 (k = 0) is 0
	lo := binary.LittleEndian.Uint64(r.fences[b*fenceSize:])
	hi := binary.LittleEndian.Uint64(r.fences[(b+1)*fenceSize:])
	if lo > hi || hi > uint64(r.n) {
		return 0, 0, r.corrupt("fences %d and %d are %d and %d (%d entries)", b, b+1, lo, hi, r.n)
	}
	return int(lo), int(hi), nil
}

// record returns entry i's record: the data section from its offset to the
// next entry's (or the end of the data), checked to lie in the data
// section and to hold at least klen key bytes and the 4-byte CRC.
func (r *Reader) record(i int, off uint64, klen int) ([]byte, error) {
	end := uint64(len(r.data))
	if i+1 < r.n {
		end = binary.LittleEndian.Uint64(r.ents[(i+1)*entrySize+8:]) & offMask
	}
	if off > end || end > uint64(len(r.data)) || end-off < uint64(klen)+recCRCSize {
		return nil, r.corrupt("entry %d: record [%d, %d) does not fit a %d-byte key and a checksum in %d data bytes",
			i, off, end, klen, len(r.data))
	}
	return r.data[off:end], nil
}

// checkCRC checks the CRC that ends rec (whose key and value are given).
func (r *Reader) checkCRC(i int, h uint64, aux uint16, key, value, rec []byte) error {
	want := binary.LittleEndian.Uint32(rec[len(rec)-recCRCSize:])
	if got := recordCRC(h, aux, key, value); got != want {
		return r.corrupt("entry %d: record checksum %#08x, stored %#08x", i, got, want)
	}
	return nil
}

// ForEach calls fn for every pair, in the file's order (by hash: no order
// a caller can rely on), stopping at fn's first error. In an approximate
// bundle key is nil. The slices alias the mapping (valid until Close; do
// not modify them). Each record's bounds and CRC are checked before fn
// sees it. A damaged record ends the walk with an ErrCorrupt error.
func (r *Reader) ForEach(fn func(key, value []byte) error) (err error) {
	if r.closed.Load() {
		return ErrClosed
	}
	_ = r.mp.Advise(vfs.AccessSequential)
	defer func() { _ = r.mp.Advise(vfs.AccessRandom) }()
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	for i := range r.n {
		key, value, err := r.pairAt(i)
		if err != nil {
			return err
		}
		if err := fn(key, value); err != nil {
			return err
		}
	}
	return nil
}

// Pair returns the i-th pair in the file's order (0 <= i < Len), after
// checking its record's bounds and CRC: a cursor for walks that cannot
// run inside a ForEach callback. The slices point into the mapping and
// are valid until Close. The key is nil in approximate mode.
func (r *Reader) Pair(i int) (key, value []byte, err error) {
	if r.closed.Load() {
		return nil, nil, ErrClosed
	}
	if i < 0 || i >= r.n {
		return nil, nil, fmt.Errorf("bundle: pair %d out of range [0, %d)", i, r.n)
	}
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	return r.pairAt(i)
}

// pairAt returns entry i's key (nil in approximate mode) and value after
// checking its record's bounds and CRC.
func (r *Reader) pairAt(i int) (key, value []byte, err error) {
	e := r.ents[i*entrySize : (i+1)*entrySize]
	h := binary.LittleEndian.Uint64(e)
	w := binary.LittleEndian.Uint64(e[8:])
	off, aux := w&offMask, uint16(w>>offBits)
	klen := int(aux)
	if r.f.approximate() {
		klen = 0
	}
	rec, err := r.record(i, off, klen)
	if err != nil {
		return nil, nil, err
	}
	value = rec[klen : len(rec)-recCRCSize]
	if !r.f.approximate() {
		key = rec[:klen]
	}
	if err := r.checkCRC(i, h, aux, key, value, rec); err != nil {
		return nil, nil, err
	}
	return key, value, nil
}

// Len returns the number of pairs.
func (r *Reader) Len() int { return r.n }

// Approximate reports whether the bundle stores only hashes of its keys.
func (r *Reader) Approximate() bool { return r.f.approximate() }

// Close unmaps the file. Values returned by Get are invalid afterwards.
// It must not run concurrently with other methods.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return ErrClosed
	}
	return r.mp.Close()
}

// Info describes a bundle, from its footer.
type Info struct {
	Version     int   // the format version
	Approximate bool  // keys stored as hashes only (see FalsePositiveRate)
	ValueFormat uint8 // ValuesPlain or ValuesItems (a tag for readers)
	Count       int64 // pairs
	KeyBytes    int64 // sum of the key lengths (0 if approximate)
	ValueBytes  int64 // sum of the value lengths
	DataBytes   int64 // data section: keys, values and a 4-byte CRC per record
	EntryBytes  int64 // entry section: 16 bytes per pair
	FenceBytes  int64 // fence section: 8 bytes per bucket, plus 8
	FenceBits   int   // k: 2^k buckets
	FileSize    int64
	Seed        uint64
	Built       time.Time
	Name        string
}

// Info returns the bundle's description.
func (r *Reader) Info() Info {
	f := r.f
	return Info{
		Version:     Version,
		Approximate: f.approximate(),
		ValueFormat: f.valueFmt,
		Count:       int64(f.count),
		KeyBytes:    int64(f.keyBytes),
		ValueBytes:  int64(f.valueBytes),
		DataBytes:   int64(f.dataLen),
		EntryBytes:  int64(f.count * entrySize),
		FenceBytes:  int64(fenceSize * f.fenceCount()),
		FenceBits:   int(f.fenceBits),
		FileSize:    int64(f.fileSize),
		Seed:        f.seed,
		Built:       time.UnixMilli(f.builtMs),
		Name:        r.name,
	}
}

// BytesPerKey is the file's size divided by its pairs (0 if empty).
func (i Info) BytesPerKey() float64 {
	if i.Count == 0 {
		return 0
	}
	return float64(i.FileSize) / float64(i.Count)
}

// FalsePositiveRate is the probability that a lookup of a key that was
// never added finds a value: 0 in exact mode; in approximate mode, the
// chance that some entry has the key's 64-bit hash and 16-bit check,
// n / 2^80 (see docs/bundle.md).
func (i Info) FalsePositiveRate() float64 {
	if !i.Approximate {
		return 0
	}
	return float64(i.Count) / math.Exp2(80)
}
