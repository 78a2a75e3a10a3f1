// Package bench is Marlin's load generator: workloads (a load phase and
// YCSB-style mixes), key distributions, latency histograms and the report
// that `marlin bench` prints.
//
// Records are numbered by id. A record's key is a function of its id alone
// (Key), and its value a function of the id and a version (Value), so any
// reader can check what it gets back (CheckValue, IDOfKey) without keeping
// a copy of what was written.
package bench

import "encoding/binary"

const golden = 0x9E3779B97F4A7C15

// splitmix64 is a fast, well-mixing bijection on uint64.
func splitmix64(x uint64) uint64 {
	x += golden
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

// unsplitmix64 is the inverse of splitmix64.
func unsplitmix64(x uint64) uint64 {
	x = unxorshift(x, 31)
	x *= inv94D0
	x = unxorshift(x, 27)
	x *= invBF58
	x = unxorshift(x, 30)
	return x - golden
}

// unxorshift inverts x ^ x>>s.
func unxorshift(x uint64, s uint) uint64 {
	y := x
	for i := s; i < 64; i += s {
		y = x ^ y>>s
	}
	return y
}

// mulInverse returns the inverse of odd a modulo 2^64 (Newton's iteration,
// each step doubles the correct low bits).
func mulInverse(a uint64) uint64 {
	x := a // correct to 3 bits for odd a
	for range 5 {
		x *= 2 - a*x
	}
	return x
}

var (
	invBF58 = mulInverse(0xBF58476D1CE4E5B9)
	inv94D0 = mulInverse(0x94D049BB133111EB)
)

// fill writes the pseudo-random stream seeded by seed into dst.
func fill(dst []byte, seed uint64) {
	x := seed
	var b [8]byte
	for i := 0; i < len(dst); i += 8 {
		x = splitmix64(x)
		binary.LittleEndian.PutUint64(b[:], x)
		copy(dst[i:], b[:])
	}
}

// matches reports whether src equals the stream fill(_, seed) would write.
func matches(src []byte, seed uint64) bool {
	x := seed
	var b [8]byte
	for i := 0; i < len(src); i += 8 {
		x = splitmix64(x)
		binary.LittleEndian.PutUint64(b[:], x)
		if string(src[i:min(i+8, len(src))]) != string(b[:min(8, len(src)-i)]) {
			return false
		}
	}
	return true
}

// Key writes the key of record id into dst (resized to size, at least 8
// bytes) and returns it. A key starts with a bijective scramble of the id,
// so keys are unique per id, consecutive ids share no prefix, and IDOfKey
// recovers the id; the rest of a longer key is pseudo-random.
func Key(dst []byte, id uint64, size int) []byte {
	size = max(size, 8)
	dst = append(dst[:0], make([]byte, size)...)
	binary.BigEndian.PutUint64(dst, splitmix64(id))
	fill(dst[8:], id^0xA5A5A5A5A5A5A5A5)
	return dst
}

// IDOfKey returns the id whose key begins like k (k must have at least 8
// bytes). Check the whole key with Key before trusting it.
func IDOfKey(k []byte) uint64 { return unsplitmix64(binary.BigEndian.Uint64(k)) }

// KeySize returns the size of record id's key when key sizes are spread
// uniformly over [lo, hi]: the size is a function of the id, so a reader
// can rebuild any key.
func KeySize(id uint64, lo, hi int) int {
	lo = max(lo, 8)
	if hi <= lo {
		return lo
	}
	return lo + int(splitmix64(id^0x3C6EF372FE94F82B)%uint64(hi-lo+1))
}

func idTag(id uint64) uint64 { return splitmix64(id ^ 0x5bd1e995) }
func verMask(id uint64) uint64 {
	return splitmix64(id ^ 0x2545F4914F6CDD1D)
}

// Value writes the value of record id at version ver into dst (resized to
// size) and returns it. The bytes are pseudo-random (incompressible) and
// self-describing, so CheckValue can verify every byte:
//
//	[0, 8)   a tag that depends on id alone (a prefix of it if size < 8)
//	[8, 16)  ver, masked by a function of id
//	[16, )   a stream seeded by (id, ver), which also checks the version
//
// Values shorter than 24 bytes have no room for a checked version: after
// the tag they hold a stream seeded by id alone.
func Value(dst []byte, id, ver uint64, size int) []byte {
	dst = append(dst[:0], make([]byte, size)...)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], idTag(id))
	copy(dst, b[:])
	switch {
	case size < minVersioned:
		if size > 8 {
			fill(dst[8:], valueSeed(id, 0))
		}
	default:
		binary.LittleEndian.PutUint64(dst[8:], ver^verMask(id))
		fill(dst[16:], valueSeed(id, ver))
	}
	return dst
}

// minVersioned is the smallest value size that records its version.
const minVersioned = 24

func valueSeed(id, ver uint64) uint64 { return splitmix64(id*0x100000001B3 ^ splitmix64(ver)) }

// CheckValue reports whether v is, byte for byte, a value that Value wrote
// for record id (at some version and size).
func CheckValue(v []byte, id uint64) bool {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], idTag(id))
	n := min(len(v), 8)
	if string(v[:n]) != string(b[:n]) {
		return false
	}
	switch {
	case len(v) <= 8:
		return true
	case len(v) < minVersioned:
		return matches(v[8:], valueSeed(id, 0))
	}
	ver := binary.LittleEndian.Uint64(v[8:]) ^ verMask(id)
	return matches(v[16:], valueSeed(id, ver))
}

// ValueVersion returns the version a value of 24 bytes or more was written
// with (0 for shorter values).
func ValueVersion(v []byte, id uint64) uint64 {
	if len(v) < minVersioned {
		return 0
	}
	return binary.LittleEndian.Uint64(v[8:]) ^ verMask(id)
}
