package index

import "sort"

// Block classes: every shard's capacity is a rung of one fixed ladder.
//
// The ladder is the orbit of minCap under the growth step, max(C×23/20,
// C+8) rounded up to a multiple of 8 slots (16, 24, 32, ..., 64, 80, 96,
// ...): growth moves a shard one rung up; when the entries do not fit the
// overflow area at the new capacity, it tries the next rung, and so on;
// LoadShard sizes a shard at the lowest rung that holds its entries at
// MaxLoad. Capacities are therefore never anything but rungs, and the slab
// allocator has one class per rung used, whatever the keys: the number of
// classes is the number of rungs up to the largest shard (about 60 at 10^9
// keys), not the number of distinct sizes the shards' histories produce
// (97 at 60 million keys and rising when retries grew by an eighth of
// whatever the capacity was).
//
// With no retry, a shard's rung is a function of its count alone: growth
// happens when count+1 would pass MaxLoad × C, so after every insert the
// capacity is the lowest rung with count ≤ MaxLoad × C (loadRung). A retry
// or a growth forced by a full overflow area puts a shard a rung or two
// higher until its count catches up. capacity_test.go simulates every
// shard at 10^9 keys from this rule.
var ladder = buildLadder()

// maxBlockSlots is the largest block (home and overflow slots) a class may
// have: a block never spans two chunks of the slab allocator.
const maxBlockSlots = chunkBytes / 8

func buildLadder() []int {
	caps := []int{minCap}
	for {
		c := caps[len(caps)-1]
		n := roundUnit(max(c*growNum/growDen, c+slotsPerUnit))
		if n+Overflow > maxBlockSlots {
			return caps
		}
		caps = append(caps, n)
	}
}

// roundUnit rounds a capacity up to whole 64-byte units of slots.
func roundUnit(c int) int { return (c + slotsPerUnit - 1) / slotsPerUnit * slotsPerUnit }

// rungAtLeast returns the lowest rung whose capacity is at least c, or
// len(ladder) if there is none.
func rungAtLeast(c int) int { return sort.SearchInts(ladder, c) }

// rungOf returns the rung of capacity c, which must be a rung's.
func rungOf(c int) int {
	r := rungAtLeast(c)
	if r == len(ladder) || ladder[r] != c {
		panic("index: capacity not on the ladder") // a bug in this package
	}
	return r
}

// overLoad reports whether count entries would push a shard of capacity c
// past MaxLoad.
func overLoad(count, c int) bool { return count*maxLoadDen > c*maxLoadNum }

// loadRung returns the rung of a shard that holds count entries and has
// grown only for load: the lowest rung not overloaded by count.
func loadRung(count int) int {
	return rungAtLeast((count*maxLoadDen + maxLoadNum - 1) / maxLoadNum)
}
