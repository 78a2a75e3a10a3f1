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
//	+12  db tag     uint32  non-zero; the database's tag (engine: the first
//	                        4 bytes of the id in its MARLIN file), so that a
//	                        segment copied in from another database is
//	                        recognised
//	+16  generation uint64  unique, increasing creation number; also in the
//	                        file name
//	+24  crc        uint32  CRC32C of bytes [0, 24)
//	+28  reserved   uint32  zero
//
// Records start at offset HeaderSize.

// HeaderSize is the size of a segment header; the first record starts here.
const HeaderSize = 32

// FormatVersion is the segment format this code writes and reads. Version
// 1 (before the database tag) is refused: Marlin had no release with it.
const FormatVersion = 2

var magic = [8]byte{'M', 'A', 'R', 'L', 'I', 'N', 'S', 'G'}

// Location bit budget: a location is a segment id and an offset in units
// of Align, packed in LocBits = 37 bits (the index's slot budget: 64 bits
// less a 27-bit fingerprint). 2^13 segments of up to 128 MiB address 1 TiB
// of log; the id fits the header's uint16.
const (
	OffsetBits = 24
	IDBits     = 13
	// MaxSegments is the number of segment ids; ids are reused after a
	// segment is removed.
	MaxSegments = 1 << IDBits
	// MaxSegmentSize is the largest offset a location can address.
	MaxSegmentSize = Align << OffsetBits
)

// Header is a decoded segment header.
type Header struct {
	ID         uint16 // the segment id (its slot in record locations)
	Generation uint64 // the segment's generation: later segments have larger ones
	// DBTag names the database the segment belongs to; never 0.
	DBTag uint32
}

// FormatLimits are the decoding limits of the format itself: the largest
// key the format can hold and a value no larger than a segment. Readers of
// existing data use these, never the limits an Open's options put on new
// writes, so that data written under larger options stays readable.
var FormatLimits = Limits{MaxKey: MaxKeyLen, MaxValue: MaxSegmentSize}

// EncodeHeader returns the header bytes.
func EncodeHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	copy(b, magic[:])
	binary.LittleEndian.PutUint16(b[8:], FormatVersion)
	binary.LittleEndian.PutUint16(b[10:], h.ID)
	binary.LittleEndian.PutUint32(b[12:], h.DBTag)
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
	switch v := binary.LittleEndian.Uint16(b[8:]); {
	case v == 1:
		return h, corruptf(0, "segment written by an older Marlin format version 1, which this version cannot read "+
			"(format version 1 predates the first release and has no upgrade path: rebuild the database from its data)")
	case v != FormatVersion:
		return h, corruptf(0, "unsupported segment format version %d (this Marlin reads version %d)", v, FormatVersion)
	}
	h.ID = binary.LittleEndian.Uint16(b[10:])
	h.DBTag = binary.LittleEndian.Uint32(b[12:])
	h.Generation = binary.LittleEndian.Uint64(b[16:])
	if h.ID >= MaxSegments {
		return h, corruptf(0, "segment id %d out of range", h.ID)
	}
	if h.DBTag == 0 {
		return h, corruptf(0, "segment header has no database tag")
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
