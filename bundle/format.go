// Package bundle reads and writes bundles: compact, immutable files of
// key-value pairs, built once and then opened with a read-only mmap by any
// number of processes, which share one copy in the page cache. A lookup
// searches the file in place: nothing is built in memory at Open and
// nothing is deserialized. The byte layout is in docs/bundle.md; this file
// is its authority in code.
//
// A bundle is
//
//	prefix (16 B) | data section | zero padding | entry section | fence section | footer (128 B)
//
// The entry section holds one fixed-size 16-byte entry per pair, sorted by
// a keyed 64-bit hash of the key; each entry locates its record in the data
// section. The fence section holds, for each of the 2^k values of the
// hash's top k bits, the index of the first entry in that bucket, so a
// lookup reads two adjacent fences, predicts the entry's position inside
// the bucket from the hash, and corrects the prediction with an
// exponential then a binary search (search.go). The footer holds the counts,
// the seeds, the section layout and the sections' CRC-32C; it is at the end
// because the builder writes the file in one sequential pass and only
// knows those figures at the end.
package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"

	farm "github.com/dgryski/go-farm"
)

// Errors. Test them with errors.Is: most are wrapped with detail (the file,
// the entry, the field).
var (
	// ErrNotFound: the key is not in the bundle.
	ErrNotFound = errors.New("bundle: key not found")
	// ErrCorrupt: the file failed a check (a field out of range, a
	// checksum, entries out of order). Nothing read from a corrupt place is
	// returned as a value.
	ErrCorrupt = errors.New("bundle: corrupt file")
	// ErrIO: the mapped file could not be read (an I/O error, or the file
	// was truncated underneath the mapping).
	ErrIO = errors.New("bundle: read error")
	// ErrClosed: the Reader or Builder was closed.
	ErrClosed = errors.New("bundle: closed")
	// ErrDuplicateKey: BuildOptions.Strict and a key was added twice.
	ErrDuplicateKey = errors.New("bundle: duplicate key")
	// ErrIndistinguishable: in approximate mode two distinct keys have the
	// same 64-bit hash and the same 16-bit check, so the bundle could not
	// tell them apart. Build again (a new seed is drawn) or build exact.
	ErrIndistinguishable = errors.New("bundle: two keys have the same hash and check")
	// ErrTooLarge: a key longer than MaxKeyLen, or more pairs or data than
	// the format addresses.
	ErrTooLarge = errors.New("bundle: too large")
	// ErrCanceled: BuildOptions.Cancel was closed during the build.
	ErrCanceled = errors.New("bundle: build canceled")
	// ErrApproximate: the operation needs keys, which an approximate
	// bundle does not store.
	ErrApproximate = errors.New("bundle: an approximate bundle stores no keys")
)

// Format constants.
const (
	// Version is the format version written and read.
	Version = 1

	magic      = "MARLNBDL"
	prefixSize = 16  // magic, version, zeros
	footerSize = 128 // see footer
	entrySize  = 16  // hash u64 | offset 48 bits | aux 16 bits
	fenceSize  = 8   // u64 entry index
	dataOff    = prefixSize

	// entryAlign aligns the entry section to a page, so the hot part of
	// the file (entries and fences) shares no page with the data.
	entryAlign = 4096

	// recCRCSize is the CRC-32C that ends every record in the data
	// section.
	recCRCSize = 4

	modeExact       = 1
	modeApproximate = 2

	// hashFarm64 names the hash: go-farm's Hash64WithSeed (FarmHash's
	// Hash64WithSeed) of the key with the footer's seed. Persisted: a
	// bundle is only readable with the same function.
	hashFarm64 = 1

	offBits = 48
	offMask = 1<<offBits - 1

	// MaxKeyLen is the longest key (the entry's 16-bit length field).
	MaxKeyLen = 1<<16 - 1
	// MaxDataBytes bounds the data section (48-bit record offsets).
	MaxDataBytes = 1 << offBits
	// MaxCount bounds the number of entries.
	MaxCount = 1 << 40

	// bucketMin is the least average bucket: fenceBits(n) picks k so that
	// n / 2^k lies in [bucketMin, 2*bucketMin).
	bucketMin = 64
)

// castagnoli is the CRC-32C table (hardware accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fenceBits is k, the number of top hash bits that pick a fence bucket,
// for n entries: 0 below 2*bucketMin entries, else the k with
// n / 2^k in [64, 128). The fence section then costs at most 8/64 = 0.125
// bytes per entry.
func fenceBits(n uint64) uint {
	if n < 2*bucketMin {
		return 0
	}
	return uint(bits.Len64(n)-1) - 6 // log2(bucketMin) = 6
}

// hashKey is the bundle's hash of a key. A variable only so that tests
// can force equal hashes; nothing else changes it.
var hashKey = func(key []byte, seed uint64) uint64 { return farm.Hash64WithSeed(key, seed) }

// checkOf is the approximate mode's 16-bit check: bits of a second keyed
// hash, independent of hashKey's.
func checkOf(key []byte, checkSeed uint64) uint16 {
	return uint16(farm.Hash64WithSeed(key, checkSeed))
}

// deriveCheckSeed derives the check seed from the hash seed (splitmix64's
// finalizer), so one random draw names both.
func deriveCheckSeed(seed uint64) uint64 {
	z := seed + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// recordCRC is the CRC-32C of a record's bytes (key then value, or the
// value alone), seeded by its entry's hash and aux field (key length or
// check): a record read through another entry's offset, or split at a
// damaged key length, fails the check.
func recordCRC(h uint64, aux uint16, key, value []byte) uint32 {
	c := crc32.Update(uint32(h)^uint32(h>>32)^uint32(aux)<<16, castagnoli, key)
	return crc32.Update(c, castagnoli, value)
}

// alignUp rounds x up to a multiple of a (a power of two).
func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// Value formats (BuildOptions.ValueFormat, Info.ValueFormat): a tag in
// the footer saying how readers should take the values. The bundle itself
// treats every value as bytes.
const (
	// ValuesPlain: the values are the data (every bundle built from dump
	// files or by hand).
	ValuesPlain uint8 = 0
	// ValuesItems: each value is an item as marlin serve stores it (a
	// header with memcached's flags and CAS in front of the data;
	// docs/server.md): a fold of a database marlin serve writes.
	ValuesItems uint8 = 1
)

// footer is the decoded footer. Layout (little-endian), 128 bytes:
//
//	  0  8  magic "MARLNBDL"
//	  8  2  version
//	 10  1  mode (1 exact, 2 approximate)
//	 11  1  hash function (1: farmhash64 with seed)
//	 12  1  fence bits k
//	 13  1  value format (0 plain, 1 items of marlin serve; a tag for readers)
//	 14  2  zero
//	 16  8  seed
//	 24  8  check seed (approximate mode; derived from seed, 0 in exact mode)
//	 32  8  entry count n
//	 40  8  key bytes (sum of key lengths; 0 in approximate mode)
//	 48  8  value bytes
//	 56  8  data length (key bytes + value bytes + 4n)
//	 64  8  entry section offset (data end rounded up to 4096)
//	 72  8  file size
//	 80  8  build time, Unix milliseconds
//	 88  4  data section CRC-32C
//	 92  4  entry section CRC-32C
//	 96  4  fence section CRC-32C
//	100 24  zero
//	124  4  CRC-32C of bytes 0..124
type footer struct {
	mode       uint8
	hashFn     uint8
	fenceBits  uint8
	valueFmt   uint8
	seed       uint64
	checkSeed  uint64
	count      uint64
	keyBytes   uint64
	valueBytes uint64
	dataLen    uint64
	entriesOff uint64
	fileSize   uint64
	builtMs    int64
	dataCRC    uint32
	entriesCRC uint32
	fencesCRC  uint32
}

func (f *footer) approximate() bool { return f.mode == modeApproximate }

// fencesOff is where the fence section starts.
func (f *footer) fencesOff() uint64 { return f.entriesOff + f.count*entrySize }

// fenceCount is the number of fences, 2^k + 1.
func (f *footer) fenceCount() uint64 { return 1<<f.fenceBits + 1 }

// layout fills the derived fields (data length, offsets, file size, fence
// bits) from the counts.
func (f *footer) layout() {
	f.fenceBits = uint8(fenceBits(f.count))
	f.dataLen = f.keyBytes + f.valueBytes + recCRCSize*f.count
	f.entriesOff = alignUp(dataOff+f.dataLen, entryAlign)
	f.fileSize = f.fencesOff() + fenceSize*f.fenceCount() + footerSize
}

func (f *footer) encode() []byte {
	b := make([]byte, footerSize)
	copy(b, magic)
	le := binary.LittleEndian
	le.PutUint16(b[8:], Version)
	b[10], b[11], b[12], b[13] = f.mode, f.hashFn, f.fenceBits, f.valueFmt
	le.PutUint64(b[16:], f.seed)
	le.PutUint64(b[24:], f.checkSeed)
	le.PutUint64(b[32:], f.count)
	le.PutUint64(b[40:], f.keyBytes)
	le.PutUint64(b[48:], f.valueBytes)
	le.PutUint64(b[56:], f.dataLen)
	le.PutUint64(b[64:], f.entriesOff)
	le.PutUint64(b[72:], f.fileSize)
	le.PutUint64(b[80:], uint64(f.builtMs))
	le.PutUint32(b[88:], f.dataCRC)
	le.PutUint32(b[92:], f.entriesCRC)
	le.PutUint32(b[96:], f.fencesCRC)
	le.PutUint32(b[124:], crc32.Checksum(b[:124], castagnoli))
	return b
}

// decodeFooter parses and checks a footer read from a file of size bytes:
// its CRC, every field's range, and every derived field against its
// derivation (so a field that disagrees with the others is an error even
// if the CRC was forged). The caller wraps its errors in ErrCorrupt.
func decodeFooter(b []byte, size uint64) (*footer, error) {
	bad := func(format string, args ...any) (*footer, error) {
		return nil, fmt.Errorf("footer: "+format, args...)
	}
	if len(b) != footerSize {
		return bad("%d bytes, want %d", len(b), footerSize)
	}
	le := binary.LittleEndian
	if string(b[:8]) != magic {
		return bad("bad magic %q (not a bundle?)", b[:8])
	}
	if v := le.Uint16(b[8:]); v != Version {
		return bad("format version %d, this build reads version %d", v, Version)
	}
	if got, want := le.Uint32(b[124:]), crc32.Checksum(b[:124], castagnoli); got != want {
		return bad("checksum %#08x, computed %#08x", got, want)
	}
	f := &footer{
		mode: b[10], hashFn: b[11], fenceBits: b[12], valueFmt: b[13],
		seed: le.Uint64(b[16:]), checkSeed: le.Uint64(b[24:]),
		count: le.Uint64(b[32:]), keyBytes: le.Uint64(b[40:]), valueBytes: le.Uint64(b[48:]),
		dataLen: le.Uint64(b[56:]), entriesOff: le.Uint64(b[64:]), fileSize: le.Uint64(b[72:]),
		builtMs:    int64(le.Uint64(b[80:])),
		dataCRC:    le.Uint32(b[88:]),
		entriesCRC: le.Uint32(b[92:]), fencesCRC: le.Uint32(b[96:]),
	}
	for i, c := range b[14:16] {
		if c != 0 {
			return bad("reserved byte %d is %#x, want 0", 14+i, c)
		}
	}
	for i, c := range b[100:124] {
		if c != 0 {
			return bad("reserved byte %d is %#x, want 0", 100+i, c)
		}
	}
	switch {
	case f.valueFmt > ValuesItems:
		return bad("value format %d (want 0 plain or 1 items)", f.valueFmt)
	case f.mode != modeExact && f.mode != modeApproximate:
		return bad("mode %d (want 1 exact or 2 approximate)", f.mode)
	case f.hashFn != hashFarm64:
		return bad("hash function %d (this build knows 1, farmhash64)", f.hashFn)
	case f.count > MaxCount:
		return bad("count %d above the limit %d", f.count, uint64(MaxCount))
	case f.approximate() && f.keyBytes != 0:
		return bad("approximate bundle with %d key bytes", f.keyBytes)
	case f.approximate() && f.checkSeed != deriveCheckSeed(f.seed):
		return bad("check seed %#x does not derive from the seed", f.checkSeed)
	case !f.approximate() && f.checkSeed != 0:
		return bad("exact bundle with check seed %#x", f.checkSeed)
	case f.keyBytes > MaxDataBytes || f.valueBytes > MaxDataBytes || f.dataLen >= MaxDataBytes:
		return bad("byte counts out of range (keys %d, values %d, data %d)", f.keyBytes, f.valueBytes, f.dataLen)
	}
	want := footer{count: f.count, keyBytes: f.keyBytes, valueBytes: f.valueBytes}
	want.layout()
	switch {
	case f.fenceBits != want.fenceBits:
		return bad("fence bits %d, want %d for %d entries", f.fenceBits, want.fenceBits, f.count)
	case f.dataLen != want.dataLen:
		return bad("data length %d, want %d (keys %d + values %d + 4 × %d)", f.dataLen, want.dataLen,
			f.keyBytes, f.valueBytes, f.count)
	case f.entriesOff != want.entriesOff:
		return bad("entry section offset %d, want %d", f.entriesOff, want.entriesOff)
	case f.fileSize != want.fileSize:
		return bad("file size field %d, want %d from the counts", f.fileSize, want.fileSize)
	case f.fileSize != size:
		return bad("file is %d bytes, the footer says %d (truncated or extended?)", size, f.fileSize)
	}
	return f, nil
}

// encodePrefix returns the 16 bytes at offset 0: the magic, the version,
// zeros. They identify the file; everything else is in the footer.
func encodePrefix() []byte {
	b := make([]byte, prefixSize)
	copy(b, magic)
	binary.LittleEndian.PutUint16(b[8:], Version)
	return b
}

// checkPrefix checks the prefix; the caller wraps its errors in
// ErrCorrupt.
func checkPrefix(b []byte) error {
	if len(b) != prefixSize || string(b[:8]) != magic {
		return errors.New("prefix: bad magic (not a bundle?)")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != Version {
		return fmt.Errorf("prefix: format version %d, this build reads version %d", v, Version)
	}
	for i, c := range b[10:] {
		if c != 0 {
			return fmt.Errorf("prefix: reserved byte %d is %#x, want 0", 10+i, c)
		}
	}
	return nil
}

// putEntry encodes an entry: the hash, the record's offset in the data
// section (48 bits), and aux: the key length (exact) or the check
// (approximate).
func putEntry(b []byte, h, off uint64, aux uint16) {
	binary.LittleEndian.PutUint64(b, h)
	binary.LittleEndian.PutUint64(b[8:], off|uint64(aux)<<offBits)
}
