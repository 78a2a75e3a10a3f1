package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Segment header, at offset 0 of every segment file (32 bytes):
//
//	+0   magic      [8]byte "MARLINSG"
//	+8   version    uint16  FormatVersion
//	+10  id         uint16  segment number used in locations, < MaxSegments
//	+12  reserved   uint32  zero
//	+16  generation uint64  unique, increasing creation number; also in the
//	                        file name
//	+24  crc        uint32  CRC32C of bytes [0, 24)
//	+28  reserved   uint32  zero
//
// Records start at offset HeaderSize.

// HeaderSize is the size of a segment header; the first record starts here.
const HeaderSize = 32

// FormatVersion is the segment format this code writes and reads.
const FormatVersion = 1

var magic = [8]byte{'M', 'A', 'R', 'L', 'I', 'N', 'S', 'G'}

// Location bit budget: a location is a segment id and an offset in units
// of Align, packed in LocBits = 34 bits (the index's slot budget).
const (
	OffsetBits = 24
	IDBits     = 10
	// MaxSegments is the number of segment ids; ids are reused after a
	// segment is removed.
	MaxSegments = 1 << IDBits
	// MaxSegmentSize is the largest offset a location can address.
	MaxSegmentSize = Align << OffsetBits
)

// Header is a decoded segment header.
type Header struct {
	ID         uint16
	Generation uint64
}

// EncodeHeader returns the header bytes.
func EncodeHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	copy(b, magic[:])
	binary.LittleEndian.PutUint16(b[8:], FormatVersion)
	binary.LittleEndian.PutUint16(b[10:], h.ID)
	binary.LittleEndian.PutUint64(b[16:], h.Generation)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castagnoli))
	return b
}

// DecodeHeader checks and decodes a segment header.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, corruptf(0, "short segment header (%d bytes)", len(b))
	}
	if [8]byte(b[:8]) != magic {
		return h, corruptf(0, "bad segment magic %q", b[:8])
	}
	if got, want := crc32.Checksum(b[:24], castagnoli), binary.LittleEndian.Uint32(b[24:]); got != want {
		return h, corruptf(0, "segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != FormatVersion {
		return h, corruptf(0, "unsupported segment format version %d", v)
	}
	h.ID = binary.LittleEndian.Uint16(b[10:])
	h.Generation = binary.LittleEndian.Uint64(b[16:])
	if h.ID >= MaxSegments {
		return h, corruptf(0, "segment id %d out of range", h.ID)
	}
	return h, nil
}

// Loc packs a segment id and a record offset into a location.
func Loc(id uint16, off int64) uint64 {
	return uint64(id)<<OffsetBits | uint64(off)/Align
}

// SplitLoc unpacks a location.
func SplitLoc(loc uint64) (id uint16, off int64) {
	return uint16(loc >> OffsetBits), int64(loc&(1<<OffsetBits-1)) * Align
}

// FileName returns the file name of the segment with the given generation.
func FileName(gen uint64) string { return fmt.Sprintf("%016d.seg", gen) }

// ParseFileName returns the generation named by a segment file name.
func ParseFileName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(s) != 16 {
		return 0, false
	}
	g, err := strconv.ParseUint(s, 10, 64)
	return g, err == nil
}
