// Package index is Marlin's in-memory hash index: a sharded open-addressing
// table of 64-bit slots, each holding a fingerprint of a key's hash and the
// location of the key's newest record. Keys themselves are not stored; a
// hit is confirmed by the caller, who reads the record and compares the key.
//
// # Slot layout
//
//	 63                         37 36                                   0
//	+-----------------------------+-------------------------------------+
//	|   fingerprint (FPBits = 27) |   location (LocBits = 37)           |
//	+-----------------------------+-------------------------------------+
//
// The 64-bit hash h picks a shard with its top ShardBits (16) bits; the next
// 27 bits are the fingerprint. The location is opaque to this package (the
// engine packs a segment number and an 8-byte-aligned offset into it) but
// must be non-zero, so that a zero slot means empty.
//
// # Ordered linear probing
//
// A shard of capacity C keeps C+Overflow slots. A fingerprint's home slot is
// fp*C >> FPBits, which is monotonic in fp; entries are kept sorted by
// fingerprint with every entry at or after its home and no empty slot
// between an entry's home and its position (Robin Hood order with
// backward-shift deletion: the table never holds tombstones). A lookup
// starts at the home slot and stops at the first empty slot or the first
// larger fingerprint, so misses are as cheap as hits. Growth needs no keys:
// new homes are computed from the stored fingerprints alone, and the
// capacity grows by about 15% at a time, from one rung of a fixed ladder
// of capacities to the next (fastrange homes allow any capacity), which
// keeps the load between MaxLoad/1.15 and MaxLoad.
//
// # Concurrency
//
// Writers take the shard's mutex. Readers take no lock: each shard has a
// sequence counter that a writer makes odd before it moves entries (shift,
// backward shift, growth) and even afterwards. A reader that saw a match
// returns it at once (a slot value is always some entry's valid location at
// the instant it is loaded); a reader that found nothing re-checks the
// counter and retries if it moved, because a concurrent shift may have
// carried the entry past it. Changing only an entry's location is a single
// atomic store and needs no counter bump.
//
// Slot arrays live outside the Go heap, in per-size-class chunks of one
// address-space reservation (slab.go). A block freed by growth, or moved by
// the slab allocator, stays mapped, so a reader still scanning it reads
// harmless stale slots (possibly another shard's, possibly half-written
// while a move copies over it): the caller's key comparison (after bounds
// and checksum checks) rejects any location that is not the key's, and the
// sequence check sends the reader back. Moves and growth copy with plain
// memory writes while such stale readers load atomically; on the 64-bit
// platforms this package supports, aligned 8-byte stores are not torn.
package index

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
)

// Bit budget of a slot and of the hash.
const (
	ShardBits = 16
	FPBits    = 27
	LocBits   = 64 - FPBits
	LocMask   = 1<<LocBits - 1
	NumShards = 1 << ShardBits

	// Overflow slots past the last home slot absorb the final cluster, so
	// probing never wraps around.
	Overflow = 8
	// minCap is the capacity a shard starts with when its first key arrives.
	minCap = 16
	// A shard grows when an insert would push its load past MaxLoad,
	maxLoadNum, maxLoadDen = 9, 10
	// to the next rung of a ladder whose rungs are a factor of about
	// growNum/growDen apart (classes.go).
	growNum, growDen = 23, 20

	slotsPerUnit = arena.UnitSize / 8
)

// MaxLoad is the load factor at which a shard grows.
const MaxLoad = float64(maxLoadNum) / maxLoadDen

// ErrFull is returned by Put when the index cannot grow a shard: its
// address-space reservation has no chunk left for the new block, or the
// shard would pass the largest block class. The Put changes nothing; other
// shards and other keys keep working.
var ErrFull = errors.New("index: address-space reservation exhausted, cannot grow")

// ErrCollision is returned by Put when more than Overflow+1 keys of a shard
// have fingerprints so close to the top of the range that no reasonable
// capacity separates their home slots. Random keys do not do that (it takes
// about 46 equal hash bits); crafted ones can.
var ErrCollision = errors.New("index: too many keys share a fingerprint")

// shard is one independently locked and grown part of the table. 32 bytes,
// pointer-free, so the shard array costs the GC nothing to scan.
type shard struct {
	// seq is odd while a writer moves entries; readers retry when it changed.
	seq atomic.Uint64
	// table packs the slot block: unit offset << 28 | size in units. Zero
	// means the shard has never held a key.
	table atomic.Uint64
	mu    sync.Mutex // guards count and all writes to the slot block
	count uint32
}

const unitsBits = 28

// Index is the sharded hash index. All methods are safe for concurrent use.
type Index struct {
	slabs  *slabs
	shards []shard
	count  atomic.Int64 // live entries
	slots  atomic.Int64 // capacity (home slots) over all shards
}

// New creates an empty index that may grow to use at most reserveBytes of
// address space for slots.
func New(reserveBytes int) (*Index, error) {
	s, err := newSlabs(reserveBytes)
	if err != nil {
		return nil, err
	}
	return &Index{slabs: s, shards: make([]shard, NumShards)}, nil
}

// Close releases the slot memory. No method may be called afterwards, and no
// reader may still be running.
func (ix *Index) Close() error { return ix.slabs.close() }

// Split returns the shard number and fingerprint of a hash.
func Split(h uint64) (shardNo int, fp uint64) {
	return int(h >> (64 - ShardBits)), (h << ShardBits) >> (64 - FPBits)
}

// Slot packs a fingerprint and a location.
func Slot(fp, loc uint64) uint64 { return fp<<LocBits | loc }

func unpack(d uint64) (off uint64, nslots int) {
	return d >> unitsBits, int(d&(1<<unitsBits-1)) * slotsPerUnit
}

// view returns the slot array described by d.
func (ix *Index) view(d uint64) []uint64 {
	off, n := unpack(d)
	p := unsafe.Add(ix.slabs.base, off*arena.UnitSize)
	return unsafe.Slice((*uint64)(p), n)
}

func home(fp uint64, nslots int) int {
	return int((fp * uint64(nslots-Overflow)) >> FPBits)
}

// Lookup calls fn with the location of every entry whose fingerprint equals
// h's, in slot order, until fn returns true; it reports whether one did. fn
// must decide by reading the record (it may be called with a stale or even
// unrelated location, which it must reject) and must not call writers of
// this index. fn may be called more than once for one location.
func (ix *Index) Lookup(h uint64, fn func(loc uint64) bool) bool {
	sn, fp := Split(h)
	sh := &ix.shards[sn]
	for spins := 0; ; spins++ {
		s1 := sh.seq.Load()
		if s1&1 != 0 {
			backoff(spins)
			continue
		}
		if d := sh.table.Load(); d != 0 {
			slots := ix.view(d)
			for i := home(fp, len(slots)); i < len(slots); i++ {
				s := atomic.LoadUint64(&slots[i])
				f := s >> LocBits
				if s == 0 || f > fp {
					break
				}
				if f == fp && fn(s&LocMask) {
					return true
				}
			}
		}
		if sh.seq.Load() == s1 {
			return false
		}
	}
}

func backoff(spins int) {
	if spins > 16 {
		runtime.Gosched()
	}
}

// PutFunc tells Put about an existing entry with the same fingerprint:
// whether it is the key being put, and if so whether to replace it.
type PutFunc func(old uint64) (isKey, replace bool)

// Put points the key with hash h at loc. match is called, under the shard's
// lock, for each existing entry with the same fingerprint. If it claims one
// as the key, that entry is replaced when match says so and Put returns its
// old location with found set; otherwise a new entry is inserted.
func (ix *Index) Put(h, loc uint64, match PutFunc) (old uint64, found, replaced bool, err error) {
	if loc == 0 || loc > LocMask {
		return 0, false, false, fmt.Errorf("index: location %#x out of range", loc)
	}
	sn, fp := Split(h)
	sh := &ix.shards[sn]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for {
		d := sh.table.Load()
		if d == 0 || overLoad(int(sh.count)+1, len(ix.view(d))-Overflow) {
			if err := ix.grow(sn, sh, fp); err != nil {
				return 0, false, false, err
			}
			continue
		}
		slots := ix.view(d)
		i := home(fp, len(slots))
		for ; i < len(slots); i++ {
			s := slots[i]
			f := s >> LocBits
			if s == 0 || f > fp {
				break
			}
			if f == fp {
				if isKey, repl := match(s & LocMask); isKey {
					if repl {
						atomic.StoreUint64(&slots[i], Slot(fp, loc))
					}
					return s & LocMask, true, repl, nil
				}
			}
		}
		// Insert at i: find the first empty slot at or after it.
		e := i
		for e < len(slots) && slots[e] != 0 {
			e++
		}
		if e == len(slots) {
			// The final cluster fills the overflow area: growing spreads the
			// homes apart (grow gives up with ErrCollision when it cannot).
			if err := ix.grow(sn, sh, fp); err != nil {
				return 0, false, false, err
			}
			continue
		}
		sh.seq.Add(1)
		for j := e; j > i; j-- { // right to left: an entry is never absent
			atomic.StoreUint64(&slots[j], slots[j-1])
		}
		atomic.StoreUint64(&slots[i], Slot(fp, loc))
		sh.seq.Add(1)
		sh.count++
		ix.count.Add(1)
		return 0, false, false, nil
	}
}

// Delete removes the entry for the key with hash h: the first entry with
// h's fingerprint for which match returns true. It returns that entry's
// location.
func (ix *Index) Delete(h uint64, match func(loc uint64) bool) (uint64, bool) {
	sn, fp := Split(h)
	sh := &ix.shards[sn]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, loc := ix.find(sh, fp, match)
	if i < 0 {
		return 0, false
	}
	ix.removeAt(sh, i)
	return loc, true
}

// CompareAndSwap replaces the location of the entry with hash h and location
// oldLoc by newLoc. It fails if that entry is gone or points elsewhere (a
// concurrent overwrite or delete wins).
func (ix *Index) CompareAndSwap(h, oldLoc, newLoc uint64) bool {
	if newLoc == 0 || newLoc > LocMask {
		return false
	}
	sn, fp := Split(h)
	sh := &ix.shards[sn]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, _ := ix.find(sh, fp, func(loc uint64) bool { return loc == oldLoc })
	if i < 0 {
		return false
	}
	// Unlike an overwrite, a move is bracketed by the sequence counter: the
	// old location's segment is about to be removed, so a reader that found
	// nothing usable at the old location must see the counter move and look
	// again.
	sh.seq.Add(1)
	atomic.StoreUint64(&ix.view(sh.table.Load())[i], Slot(fp, newLoc))
	sh.seq.Add(1)
	return true
}

// DeleteExact removes the entry with hash h and location loc, if present.
func (ix *Index) DeleteExact(h, loc uint64) bool {
	_, ok := ix.Delete(h, func(l uint64) bool { return l == loc })
	return ok
}

// find returns the position and location of the first entry with
// fingerprint fp accepted by match, or -1. The shard's lock must be held.
func (ix *Index) find(sh *shard, fp uint64, match func(uint64) bool) (int, uint64) {
	d := sh.table.Load()
	if d == 0 {
		return -1, 0
	}
	slots := ix.view(d)
	for i := home(fp, len(slots)); i < len(slots); i++ {
		s := slots[i]
		f := s >> LocBits
		if s == 0 || f > fp {
			break
		}
		if f == fp && match(s&LocMask) {
			return i, s & LocMask
		}
	}
	return -1, 0
}

// removeAt deletes slot i by shifting the displaced entries after it back
// by one. The shard's lock must be held.
func (ix *Index) removeAt(sh *shard, i int) {
	slots := ix.view(sh.table.Load())
	sh.seq.Add(1)
	j := i
	for ; j+1 < len(slots); j++ {
		next := slots[j+1]
		if next == 0 || home(next>>LocBits, len(slots)) == j+1 {
			break
		}
		atomic.StoreUint64(&slots[j], next)
	}
	atomic.StoreUint64(&slots[j], 0)
	sh.seq.Add(1)
	sh.count--
	ix.count.Add(-1)
}

// grow moves shard sn into a larger block: the next rung of the ladder
// (classes.go), or a higher one if the entries (and the pending one) do
// not fit the overflow area there. The shard's lock must be held.
//
// pending, if not noPending, is the fingerprint of an entry about to be
// inserted: the new capacity must have room for it as well.
func (ix *Index) grow(sn int, sh *shard, pending uint64) error {
	oldD := sh.table.Load()
	var old []uint64
	oldCap, r := 0, 0
	if oldD != 0 {
		old = ix.view(oldD)
		oldCap = len(old) - Overflow
		r = rungOf(oldCap) + 1
	}
	// Growth makes room for a final cluster that overflows because the
	// homes of fingerprints at the top of the range spread apart with the
	// capacity. Only keys crafted to share (nearly) the top fingerprint need
	// more than this bound (the first rung at or past it is still tried);
	// they get ErrCollision instead of unbounded memory.
	limit := max(2*oldCap, 4*(int(sh.count)+minCap))
	for ; ; r++ {
		if r == len(ladder) {
			return fmt.Errorf("%w: shard %d would need more than %d slots", ErrFull, sn, ladder[len(ladder)-1])
		}
		if r > 0 && ladder[r-1] >= limit {
			return ErrCollision
		}
		if fits(old, ladder[r]+Overflow, pending) {
			break
		}
	}
	newCap := ladder[r]
	units := uint32((newCap + Overflow) / slotsPerUnit)
	off, err := ix.slabs.allocBlock(units, int32(sn), false, false) // rehash writes every slot
	if err != nil {
		return err
	}
	newD := off/arena.UnitSize<<unitsBits | uint64(units)
	rehash(old, ix.view(newD))
	sh.seq.Add(1)
	sh.table.Store(newD)
	sh.seq.Add(1)
	if oldD != 0 {
		ix.freeBlock(oldD)
	}
	ix.slots.Add(int64(newCap - oldCap))
	return nil
}

// freeBlock returns a block no shard points at any more. The slab allocator
// may move another shard's block into its place; that shard is locked with
// TryLock (we hold a shard lock already, so waiting could deadlock) and its
// readers are sent back by its sequence counter.
func (ix *Index) freeBlock(d uint64) {
	off, n := unpack(d)
	units := uint32(n / slotsPerUnit)
	ix.slabs.free(off*arena.UnitSize, units, func(owner int32, from, to uint64) bool {
		sh := &ix.shards[owner]
		if !sh.mu.TryLock() {
			return false
		}
		defer sh.mu.Unlock()
		od := sh.table.Load()
		if oo, _ := unpack(od); oo*arena.UnitSize != from {
			return false // not where the allocator thinks: leave a hole
		}
		nd := to/arena.UnitSize<<unitsBits | uint64(units)
		copy(ix.view(nd), ix.view(od))
		sh.seq.Add(1)
		sh.table.Store(nd)
		sh.seq.Add(1)
		return true
	})
}

// noPending tells grow and fits that no insert is pending.
const noPending = ^uint64(0)

// fits reports whether the sorted entries of src, plus an entry with
// fingerprint pending (unless noPending), fit in n slots.
func fits(src []uint64, n int, pending uint64) bool {
	next := 0
	place := func(fp uint64) { next = max(home(fp, n), next) + 1 }
	for _, s := range src {
		if s == 0 {
			continue
		}
		if fp := s >> LocBits; pending != noPending && pending < fp {
			place(pending)
			pending = noPending
		}
		place(s >> LocBits)
	}
	if pending != noPending {
		place(pending)
	}
	return next <= n
}

// rehash copies the sorted entries of src into dst at their new homes and
// writes 0 to every other slot of dst, so dst need not be zeroed first (nor
// hold zeros: a reused block holds old bytes). It reports false if the
// entries do not fit (callers check fits first); dst is then garbage.
func rehash(src, dst []uint64) bool {
	next := 0
	for _, s := range src {
		if s == 0 {
			continue
		}
		p := max(home(s>>LocBits, len(dst)), next)
		if p >= len(dst) {
			return false
		}
		// The gap before an entry is a slot or two at the load factors
		// the index keeps: a loop, not a call to memclr per entry (which
		// was a third of a snapshot load's CPU at 10^9 keys).
		for ; next < p; next++ {
			dst[next] = 0
		}
		dst[p] = s
		next = p + 1
	}
	clear(dst[next:])
	return true
}
