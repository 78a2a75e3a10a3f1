package index

import "sync/atomic"

// Index operations for batched writes (issue 10). At 10^9 keys the index
// is several GB, so each key's first slot access is a cache and TLB miss;
// a batch write used to pay it twice per new key (Lookup to find whether
// the key exists, then Put walking to the same slot to insert it). The
// engine now prefetches a batch's slots (Prefetch) and does one walk per
// key (FindOrInsert).

// FindOrInsert walks once to the slots of h's fingerprint. match is
// called, under the shard's lock, with the location of each entry with
// that fingerprint, in slot order, until it claims one as the key; that
// entry is left unchanged and FindOrInsert returns its location with found
// set. If match claims none, an entry for loc is inserted at the position
// the walk stopped at (growing the shard first if needed) and found is
// false. On an error (ErrFull, ErrCollision, a location out of range)
// nothing changed.
//
// match must not call writers of this index. Concurrent Lookups stay
// correct: the insert is the same shift as Put's, bracketed by the shard's
// sequence counter.
func (ix *Index) FindOrInsert(h, loc uint64, match func(old uint64) bool) (old uint64, found bool, err error) {
	old, found, _, err = ix.Put(h, loc, func(o uint64) (bool, bool) { return match(o), false })
	return old, found, err
}

// Prefetch touches the shard header and the home slot of each hash in hs,
// so that the walks that follow find them in cache. The loads of one pass
// are independent of each other, so the processor overlaps their misses,
// where walking key after key waits for each miss in turn (two in a row
// per key: the shard header, then the slot). It takes no lock and changes
// nothing; a concurrent growth or block move only makes a touch useless.
// The result is meaningless; it keeps the loads from being dropped.
func (ix *Index) Prefetch(hs []uint64) uint64 {
	var sum uint64
	for _, h := range hs {
		sn, _ := Split(h)
		sum += ix.shards[sn].table.Load()
	}
	for _, h := range hs {
		sn, fp := Split(h)
		if d := ix.shards[sn].table.Load(); d != 0 {
			slots := ix.view(d)
			sum += atomic.LoadUint64(&slots[home(fp, len(slots))])
		}
	}
	return sum
}
