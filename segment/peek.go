package segment

import "encoding/binary"

// PeekSize returns the aligned size of the record whose header starts buf,
// reading only the header: a reader that fetches a record in pieces (a
// positioned read of a first chunk) learns how much more to read. ok is
// false if buf does not hold a whole header or its lengths break lim;
// Decode then reports why. The size is not yet trusted: Decode checks the
// record.
func PeekSize(buf []byte, lim Limits) (size int, ok bool) {
	if len(buf) < fixedHeader+2 {
		return 0, false
	}
	flags := uint8(binary.LittleEndian.Uint64(buf[4:]) >> 60)
	p := fixedHeader
	klen, n := binary.Uvarint(buf[p:])
	if n <= 0 || klen > MaxKeyLen || int(klen) > lim.MaxKey {
		return 0, false
	}
	p += n
	vlen, n := binary.Uvarint(buf[p:])
	if n <= 0 || vlen > maxValue || int(vlen) > lim.MaxValue {
		return 0, false
	}
	p += n
	if flags&FlagExpiry != 0 {
		p += 8
	}
	return alignUp(p + int(klen) + int(vlen)), true
}
