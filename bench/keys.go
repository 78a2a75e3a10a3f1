// Package bench is Marlin's load generator: workloads (a load phase and
// YCSB-style mixes), key distributions, latency histograms and the report
// that `marlin bench` prints.
package bench

import "encoding/binary"

// splitmix64 is a fast, well-mixing bijection on uint64.
func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

// Key writes the key of record id into dst (resized to size, at least 8
// bytes) and returns it. Keys start with a scrambled form of the id, so
// consecutive ids do not share prefixes, and are unique per id.
func Key(dst []byte, id uint64, size int) []byte {
	size = max(size, 8)
	dst = append(dst[:0], make([]byte, size)...)
	binary.BigEndian.PutUint64(dst, splitmix64(id))
	// Fill the rest with a second stream so long keys are not mostly zeros;
	// the first 8 bytes alone already make the key unique (bijection).
	for i, x := 8, splitmix64(id^0xA5A5A5A5A5A5A5A5); i < size; i += 8 {
		x = splitmix64(x)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		copy(dst[i:], b[:])
	}
	return dst
}

// Value writes a value for record id at version ver into dst (resized to
// size) and returns it. The bytes are pseudo-random (incompressible); the
// first 8 (or fewer, for short values) are a function of id alone so that a
// reader can check that a value belongs to its key (CheckValue).
func Value(dst []byte, id, ver uint64, size int) []byte {
	dst = append(dst[:0], make([]byte, size)...)
	var tag [8]byte
	binary.LittleEndian.PutUint64(tag[:], splitmix64(id^0x5bd1e995))
	n := copy(dst, tag[:])
	for i, x := n, splitmix64(id*0x100000001B3+ver); i < size; i += 8 {
		x = splitmix64(x)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		copy(dst[i:], b[:])
	}
	return dst
}

// CheckValue reports whether v could have been written for record id.
func CheckValue(v []byte, id uint64) bool {
	var tag [8]byte
	binary.LittleEndian.PutUint64(tag[:], splitmix64(id^0x5bd1e995))
	n := min(len(v), 8)
	return string(v[:n]) == string(tag[:n])
}
