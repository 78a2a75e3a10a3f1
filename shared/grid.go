package shared

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// Expiry buckets. A key that expires is removed by the engine without
// any write, so nothing can decrement its value's count then. Instead
// every count that involves a key with an expiry is kept by expiry
// bucket: the key counts in bucket g, a time at or after its expiry, and
// the count stops mattering when g passes. Meta records count their
// references this way (meta.buckets; a value's live references are those
// without expiry plus the buckets still ahead), and so do the store's
// totals (bucket records, which carry expiry g themselves and so vanish
// with it).
//
// g is the key's expiry rounded up to a multiple of a step that grows
// with the TTL: for a key written at now with expiry e, the step is the
// largest power of two (in ms) at most (e-now)/8, and at least 2^minLevel
// ms (about a second). So:
//
//   - a count outlives its key by less than one step: an eighth of the
//     TTL it was written with, or about a second for short ones; a value
//     whose keys all expired is reclaimed by its own expiry that much
//     later at most;
//   - the buckets a count can be in at time now are, for each step 2^k,
//     multiples of 2^k in (now, now+17*2^k): e-now < 2^(k+4) when it was
//     written, earlier than now. A value has at most 17 buckets per step
//     size its keys use, and Stats reads at most 17 bucket records per
//     step size ever used (the levels bitmap in the no-expiry bucket).
//   - a value's expiry, the latest bucket of its keys, moves by whole
//     steps: a value shared by a stream of keys with one TTL is
//     rewritten (to extend its expiry) at most once per step, an eighth
//     of the TTL.

const (
	minLevel  = 10 // the smallest step: 2^10 ms
	gridShift = 3  // the step is at most the TTL / 2^gridShift
	// maxLevel bounds the step: a TTL is below 2^48 ms (maxExpiry).
	maxLevel = 47 - gridShift
	// bucketSpan: a bucket of step 2^k is less than bucketSpan*2^k ahead.
	bucketSpan = 1<<(gridShift+1) + 1
)

// levelFor returns the level (log2 of the step) of a key written at now
// with expiry e (> now).
func levelFor(now, e int64) uint8 {
	k := bits.Len64(uint64(e-now)) - 1 - gridShift
	return uint8(min(max(k, minLevel), maxLevel))
}

// bucketOf returns the bucket of a key with expiry e (0: none, bucket 0)
// counted at level k: e rounded up to a multiple of 2^k.
func bucketOf(e int64, k uint8) int64 {
	if e == 0 {
		return 0
	}
	step := int64(1) << k
	return (e + step - 1) &^ (step - 1)
}

// bucketKey is the key of bucket g's totals record.
func bucketKey(g int64) []byte {
	return internalKey(kindBucket, binary.BigEndian.AppendUint64(nil, uint64(g)))
}

// candidates returns the buckets that may hold counts at now, for the
// levels in the bitmap (bit k: level k was used), in ascending order
// without repeats, 0 (no expiry) first.
func candidates(now int64, levels uint64) []int64 {
	seen := map[int64]bool{0: true}
	out := []int64{0}
	for levels != 0 {
		k := uint8(bits.TrailingZeros64(levels))
		levels &^= 1 << k
		step := int64(1) << k
		for g := (now &^ (step - 1)) + step; g < now+bucketSpan*step; g += step {
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	return out
}
