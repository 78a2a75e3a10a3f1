package bundle

import (
	"encoding/binary"
	"math/bits"
)

// The search of the entry section.
//
// Entries are sorted by hash, and the hashes of distinct keys are uniform
// (a keyed hash with a per-bundle random seed, so keys cannot be chosen to
// pile up). A lookup of hash h:
//
//  1. reads fences b and b+1, b = h's top k bits: the bucket [lo, hi) of
//     entries whose hashes start with b (about 64 to 128 of them);
//  2. predicts the position p = lo + (h << k) / 2^64 × (hi − lo): the
//     bucket's hashes are uniform over its range, so the first entry at or
//     above h is near p;
//  3. steps from p by 1, 2, 4, ... entries, away from the side where h
//     lies beyond p, until the step brackets h (exponential search);
//  4. binary-searches the bracket for the first entry with hash >= h.
//
// Steps 3 and 4 bound the probes by about 2 log2(hi − lo) + 2 for any
// content, sorted or not: a damaged or crafted file makes a lookup wrong
// or an error, never endless, and every index stays in [lo, hi), which the
// caller has checked to lie in [0, n). For uniform hashes the prediction is
// a few entries off (the standard deviation of a uniform order statistic
// in a bucket of 64 to 128 entries is at most 5.7), so a lookup reads
// about 3 to 4 entries, one or two cache lines, after the fences.
//
// Why fences and not the prediction over the whole file: over n entries
// the first entry at or above h sits on average about 0.31 × sqrt(n)
// entries from h / 2^64 × n (990 at 10^7 entries, 9,900 at 10^9), so the exponential
// search from a global prediction costs about 2 log2(sqrt(n)) probes spread
// over several pages. The fences cost 8 bytes per 64 to 128 entries (at
// most 0.125 bytes per key) and make the expected probe count a constant
// (docs/bundle.md, Lookup, has the measured figures).

// hashAt is entry i's hash. ents is the entry section; i must be in range.
func hashAt(ents []byte, i int) uint64 {
	return binary.LittleEndian.Uint64(ents[i*entrySize:])
}

// lowerBound returns the first index i in [lo, hi) whose hash is >= h (hi
// if none), assuming the entries of [lo, hi) are sorted, and how many
// entries it read. If they are not sorted it still returns an index in
// [lo, hi] after at most about 2 log2(hi − lo) + 2 reads. k is the number
// of top hash bits the bucket [lo, hi) shares, used to predict the
// position; 0 <= lo <= hi <= len(ents)/entrySize.
func lowerBound(ents []byte, lo, hi int, h uint64, k uint) (int, int) {
	n := hi - lo
	if n <= 0 {
		return lo, 0
	}
	// Position of h inside its bucket, as a fraction of 2^64. A shift by
	// 64 or more is 0 in Go, and k <= 40.
	pos, _ := bits.Mul64(h<<k, uint64(n))
	p := lo + int(pos) // pos < n
	probes := 1
	var a, b int // the answer lies in [a, b]; entry b (if b < hi) is >= h
	if hashAt(ents, p) < h {
		a, b = p+1, hi
		for step := 1; ; step <<= 1 {
			q := p + step
			if q >= hi {
				break
			}
			probes++
			if hashAt(ents, q) >= h {
				b = q
				break
			}
			a = q + 1
		}
	} else {
		a, b = lo, p
		for step := 1; ; step <<= 1 {
			q := p - step
			if q < lo {
				break
			}
			probes++
			if hashAt(ents, q) < h {
				a = q + 1
				break
			}
			b = q
		}
	}
	for a < b {
		m := int(uint(a+b) >> 1)
		probes++
		if hashAt(ents, m) < h {
			a = m + 1
		} else {
			b = m
		}
	}
	return a, probes
}
