// Package segment defines Marlin's on-disk log: segment files made of a
// fixed header followed by 8-byte-aligned, checksummed records. See
// docs/format.md for the byte-level layout.
package segment

import (
	"encoding/binary"
	"hash/crc32"
)

// Record layout (all integers little-endian), aligned to 8 bytes:
//
//	+0   crc     uint32  CRC32C of bytes [4, end of value), seeded by the
//	                     segment's generation and the record's offset
//	+4   meta    uint64  seq (bits 0-55) | kind (56-59) | flags (60-63)
//	+12  klen    uvarint key length, 1..65535 (0 for a batch commit)
//	     vlen    uvarint value length
//	     expiry  int64   unix milliseconds; present only with FlagExpiry
//	     key, value
//	     zero padding to the next multiple of 8
//
// The seed makes a record valid only at the offset of the segment it was
// written to: a stale record from an older file, or bytes read at a wrong
// offset, fail the check.

// Align is the record alignment; locations count in units of it.
const Align = 8

// Kind says what a record does.
type Kind uint8

// Record kinds. Zero is invalid so that zero-filled space never decodes.
const (
	KindPut         Kind = 1 // set key to value
	KindDelete      Kind = 2 // tombstone: key deleted
	KindBatchCommit Kind = 3 // commits the FlagBatch records just before it
	// KindSyncMark carries no data: its value is the segment offset up to
	// which the file was known to be fsynced when the mark was written.
	// Recovery uses marks to tell damage in synced data (corruption) from
	// a torn, never-synced tail.
	KindSyncMark Kind = 4
)

// Record flags.
const (
	FlagExpiry uint8 = 1 << 0 // an expiry time follows the lengths
	FlagBatch  uint8 = 1 << 1 // part of a batch; applies only with its commit
)

const (
	fixedHeader = 12
	// MaxHeader bounds a record's header: fixed part, two uvarints, expiry.
	MaxHeader = fixedHeader + 3 + 5 + 8
	// MaxKeyLen is the largest key the format can hold.
	MaxKeyLen = 1<<16 - 1
	// MaxSeq is the largest sequence number the format can hold.
	MaxSeq   = 1<<56 - 1
	seqMask  = MaxSeq
	maxValue = 1<<32 - 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is a decoded record. Key and Value alias the buffer it was
// decoded from.
type Record struct {
	Kind   Kind   // put, delete, batch commit or sync mark
	Flags  uint8  // FlagBatch and the like
	Seq    uint64 // the write's sequence number
	Expiry int64  // unix milliseconds, 0 = never
	Key    []byte // the key (none for commits and sync marks)
	Value  []byte // the value; a tombstone's holds what it shadows
}

// Size returns the record's encoded, aligned size.
func Size(klen, vlen int, expiry bool) int {
	n := fixedHeader + uvarintLen(uint64(klen)) + uvarintLen(uint64(vlen)) + klen + vlen
	if expiry {
		n += 8
	}
	return alignUp(n)
}

func alignUp(n int) int { return (n + Align - 1) &^ (Align - 1) }

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// seed mixes a segment generation and an offset into the CRC's initial
// value.
func seed(gen uint64, off int64) uint32 {
	x := gen*0x9E3779B97F4A7C15 ^ uint64(off)*0xC2B2AE3D27D4EB4F
	x ^= x >> 29
	return uint32(x) ^ uint32(x>>32)
}

// Encode writes r into dst, which must hold Size(len(r.Key), len(r.Value),
// r.Expiry != 0) bytes, for offset off of the segment with generation gen.
// It returns the number of bytes written (the aligned size), padding
// included.
func Encode(dst []byte, gen uint64, off int64, r *Record) int {
	flags := r.Flags &^ FlagExpiry
	if r.Expiry != 0 {
		flags |= FlagExpiry
	}
	meta := r.Seq&seqMask | uint64(r.Kind&0xf)<<56 | uint64(flags&0xf)<<60
	binary.LittleEndian.PutUint64(dst[4:], meta)
	p := fixedHeader
	p += binary.PutUvarint(dst[p:], uint64(len(r.Key)))
	p += binary.PutUvarint(dst[p:], uint64(len(r.Value)))
	if flags&FlagExpiry != 0 {
		binary.LittleEndian.PutUint64(dst[p:], uint64(r.Expiry))
		p += 8
	}
	p += copy(dst[p:], r.Key)
	p += copy(dst[p:], r.Value)
	end := alignUp(p)
	clear(dst[p:end])
	binary.LittleEndian.PutUint32(dst, crc32.Update(seed(gen, off), castagnoli, dst[4:p]))
	return end
}

// Limits bound what Decode accepts before it trusts any length.
type Limits struct {
	MaxKey   int // the longest key accepted
	MaxValue int // the longest value accepted
}

// Decode decodes the record at the start of buf, which was read from offset
// off of the segment with generation gen. It returns the record and its
// aligned size. Lengths are checked against lim and against len(buf) before
// anything is sliced, and the checksum is verified; any failure is a
// *CorruptError at off. Decode never allocates.
func Decode(buf []byte, gen uint64, off int64, lim Limits) (Record, int, error) {
	var r Record
	if len(buf) < fixedHeader+2 {
		return r, 0, corruptf(off, "short record header (%d bytes left)", len(buf))
	}
	meta := binary.LittleEndian.Uint64(buf[4:])
	r.Seq = meta & seqMask
	r.Kind = Kind(meta >> 56 & 0xf)
	r.Flags = uint8(meta >> 60)
	if r.Kind < KindPut || r.Kind > KindSyncMark {
		return r, 0, corruptf(off, "bad record kind %d", r.Kind)
	}
	p := fixedHeader
	klen, n := binary.Uvarint(buf[p:])
	if n <= 0 || klen > MaxKeyLen || int(klen) > lim.MaxKey {
		return r, 0, corruptf(off, "bad key length")
	}
	p += n
	vlen, n := binary.Uvarint(buf[p:])
	if n <= 0 || vlen > maxValue || int(vlen) > lim.MaxValue {
		return r, 0, corruptf(off, "bad value length")
	}
	p += n
	if r.Flags&FlagExpiry != 0 {
		if len(buf) < p+8 {
			return r, 0, corruptf(off, "short record header")
		}
		r.Expiry = int64(binary.LittleEndian.Uint64(buf[p:]))
		p += 8
	}
	end := p + int(klen) + int(vlen)
	if end > len(buf) {
		return r, 0, corruptf(off, "record of %d bytes overruns the %d bytes left", end, len(buf))
	}
	want := binary.LittleEndian.Uint32(buf)
	if got := crc32.Update(seed(gen, off), castagnoli, buf[4:end]); got != want {
		return r, 0, corruptf(off, "checksum mismatch (stored %#08x, computed %#08x)", want, got)
	}
	// The padding is not checksummed; it must be zero, so that every bit of
	// an aligned record is checked (and a record has a single encoding).
	for _, b := range buf[end:min(alignUp(end), len(buf))] {
		if b != 0 {
			return r, 0, corruptf(off, "non-zero record padding")
		}
	}
	r.Key = buf[p : p+int(klen) : p+int(klen)]
	r.Value = buf[p+int(klen) : end : end]
	// The size may exceed len(buf) when a torn write cut off the padding of
	// the last record; the record itself is intact.
	return r, alignUp(end), nil
}
