package index

import (
	"fmt"
	"sync/atomic"

	"github.com/marlinkv/marlin/arena"
)

// ShardLocations appends to buf the locations of all entries of shard sn as
// one consistent cut (taken between writers' moves) and returns buf. The
// engine iterates the index shard by shard this way.
func (ix *Index) ShardLocations(sn int, buf []uint64) []uint64 {
	start := len(buf)
	buf = ix.ShardSlots(sn, buf)
	for i := start; i < len(buf); i++ {
		buf[i] &= LocMask
	}
	return buf
}

// Stats describes the index's size and memory.
type Stats struct {
	Entries       int64   // live entries
	Capacity      int64   // home slots over all shards
	LoadFactor    float64 // Entries / Capacity
	ResidentBytes int64   // slot memory the OS holds for the index
	LiveBytes     int64   // bytes in live slot blocks (overflow areas included)
	ShardBytes    int64   // Go-heap bytes of the shard headers
	// AddressBytes is the address space the slab allocator has carved from
	// the reservation (its high-water mark of chunks in use); ReserveBytes
	// is the reservation. Put fails with ErrFull when a shard needs a chunk
	// and none is left.
	AddressBytes, ReserveBytes int64
	Classes                    int // block classes (capacity rungs) holding blocks
}

// Stats reports the index's size and memory.
func (ix *Index) Stats() Stats {
	u := ix.slabs.usage()
	st := Stats{
		Entries:       ix.count.Load(),
		Capacity:      ix.slots.Load(),
		ResidentBytes: u.resident,
		LiveBytes:     u.live,
		ShardBytes:    int64(len(ix.shards)) * 32,
		AddressBytes:  u.carved * chunkBytes,
		ReserveBytes:  u.reserve,
		Classes:       u.classes,
	}
	if st.Capacity > 0 {
		st.LoadFactor = float64(st.Entries) / float64(st.Capacity)
	}
	return st
}

// Len returns the number of entries.
func (ix *Index) Len() int64 { return ix.count.Load() }

// Check verifies the table's invariants: entries sorted by fingerprint,
// each at or after its home with no empty slot in between, counts
// consistent. It takes every shard's lock in turn; tests and the verify
// command use it.
func (ix *Index) Check() error {
	var total int64
	for sn := range ix.shards {
		sh := &ix.shards[sn]
		sh.mu.Lock()
		err := ix.checkShard(sn, sh)
		total += int64(sh.count)
		sh.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if n := ix.count.Load(); n != total {
		return fmt.Errorf("index: count %d, shards hold %d", n, total)
	}
	return nil
}

func (ix *Index) checkShard(sn int, sh *shard) error {
	d := sh.table.Load()
	if d == 0 {
		if sh.count != 0 {
			return fmt.Errorf("index: shard %d has no table but count %d", sn, sh.count)
		}
		return nil
	}
	slots := ix.view(d)
	var n uint32
	prevFP, lastEmpty := uint64(0), -1
	for i, s := range slots {
		if s == 0 {
			lastEmpty = i
			continue
		}
		n++
		fp := s >> LocBits
		if fp < prevFP {
			return fmt.Errorf("index: shard %d slot %d: fingerprint %#x after %#x", sn, i, fp, prevFP)
		}
		prevFP = fp
		h := home(fp, len(slots))
		if h > i {
			return fmt.Errorf("index: shard %d slot %d: before its home %d", sn, i, h)
		}
		if lastEmpty >= h {
			return fmt.Errorf("index: shard %d slot %d: empty slot %d between it and its home %d", sn, i, lastEmpty, h)
		}
		if s&LocMask == 0 {
			return fmt.Errorf("index: shard %d slot %d: zero location", sn, i)
		}
	}
	if n != sh.count {
		return fmt.Errorf("index: shard %d holds %d entries, count says %d", sn, n, sh.count)
	}
	return nil
}

// LoadShard fills the empty shard sn with the given slot values (as
// ShardLocations' slots, in slot order: sorted by fingerprint), sizing it
// for them. Snapshots load the index this way without any key. It fails if
// the shard is not empty, or if the slots are out of order or belong to
// another shard's layout.
func (ix *Index) LoadShard(sn int, slots []uint64) error {
	sh := &ix.shards[sn]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.table.Load() != 0 {
		return fmt.Errorf("index: shard %d is not empty", sn)
	}
	for i, s := range slots {
		if s&LocMask == 0 || i > 0 && s>>LocBits < slots[i-1]>>LocBits {
			return fmt.Errorf("index: shard %d: slot %d out of order or empty", sn, i)
		}
	}
	if len(slots) == 0 {
		return nil
	}
	// The rung a shard grown by load alone would have (classes.go), or a
	// higher one if the entries do not fit its overflow area.
	r := loadRung(len(slots))
	for ; ; r++ {
		if r == len(ladder) {
			return fmt.Errorf("%w: shard %d would need more than %d slots", ErrFull, sn, ladder[len(ladder)-1])
		}
		if r > 0 && ladder[r-1] >= 4*(len(slots)+minCap) {
			return ErrCollision
		}
		if fits(slots, ladder[r]+Overflow, noPending) {
			break
		}
	}
	c := ladder[r]
	units := uint32((c + Overflow) / slotsPerUnit)
	// rehash writes every slot; the class's pages are made resident ahead
	// in bulk (FinishLoad gives back what is left over).
	off, err := ix.slabs.allocBlock(units, int32(sn), false, true)
	if err != nil {
		return err
	}
	d := off/arena.UnitSize<<unitsBits | uint64(units)
	rehash(slots, ix.view(d))
	sh.table.Store(d)
	sh.count = uint32(len(slots))
	ix.count.Add(int64(len(slots)))
	ix.slots.Add(int64(c))
	return nil
}

// FinishLoad ends a bulk load by LoadShard: the pages it made resident
// ahead of each block class's last block are given back. Call it once the
// shards are loaded (it is harmless at any time: it only trims).
func (ix *Index) FinishLoad() { ix.slabs.trimLoad() }

// ShardSlots appends the raw slot values (fingerprint and location) of
// shard sn to buf, as one consistent cut, for snapshots.
func (ix *Index) ShardSlots(sn int, buf []uint64) []uint64 {
	sh := &ix.shards[sn]
	start := len(buf)
	for spins := 0; ; spins++ {
		buf = buf[:start]
		s1 := sh.seq.Load()
		if s1&1 != 0 {
			backoff(spins)
			continue
		}
		if d := sh.table.Load(); d != 0 {
			for i, slots := 0, ix.view(d); i < len(slots); i++ {
				if s := atomic.LoadUint64(&slots[i]); s != 0 {
					buf = append(buf, s)
				}
			}
		}
		if sh.seq.Load() == s1 {
			return buf
		}
	}
}
