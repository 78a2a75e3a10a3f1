package index

import (
	"testing"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func newTestSlabs(t *testing.T, reserve int) *slabs {
	t.Helper()
	s, err := newSlabs(reserve)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.close()) })
	return s
}

func (s *slabs) bytes(off uint64, units uint32) []byte {
	return s.mem[off : off+uint64(units)*arena.UnitSize]
}

// pagesResident reports which pages of b (page-aligned) are resident.
func pagesResident(t *testing.T, b []byte) []bool {
	t.Helper()
	n := (len(b) + arena.PageSize - 1) / arena.PageSize
	vec := make([]byte, n)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))),
		uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, e, "mincore: %v", e)
	out := make([]bool, n)
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestSlabsPacking drives one class directly: blocks are packed, a free
// moves the last block into the hole, a refused move leaves a hole that the
// next alloc fills, and trailing pages go back to the OS.
func TestSlabsPacking(t *testing.T) {
	s := newTestSlabs(t, 1<<32)
	const units = 5 // 320-byte blocks: they straddle pages
	bs := int(units * arena.UnitSize)
	n := 3 * arena.PageSize / bs * 2 // several pages' worth
	offs := make([]uint64, n)
	for i := range offs {
		off, err := s.alloc(units, int32(i))
		require.NoError(t, err)
		require.True(t, allZero(s.bytes(off, units)))
		if i > 0 {
			require.Equal(t, offs[i-1]+uint64(bs), off, "blocks of a class are packed")
		}
		offs[i] = off
		fill := s.bytes(off, units)
		for j := range fill {
			fill[j] = byte(i + 1)
		}
	}
	c := s.classes[units]
	base := uint64(c.base)
	require.Zero(t, base%uint64(arena.PageSize))
	live, res := s.usage()
	require.Equal(t, int64(n*bs), live)
	require.Equal(t, int64(pageUp(n*bs)), res)

	// Free block 3: block n-1 moves into it.
	type mv struct {
		owner    int32
		from, to uint64
	}
	var moves []mv
	accept := func(owner int32, from, to uint64) bool {
		moves = append(moves, mv{owner, from, to})
		copy(s.mem[to:to+uint64(bs)], s.mem[from:from+uint64(bs)])
		return true
	}
	refuse := func(owner int32, from, to uint64) bool {
		moves = append(moves, mv{owner, from, to})
		return false
	}
	s.free(offs[3], units, accept)
	require.Equal(t, []mv{{int32(n - 1), offs[n-1], offs[3]}}, moves)
	require.Equal(t, int32(n-1), c.owners[3])
	require.Len(t, c.owners, n-1)
	live, res = s.usage()
	require.Equal(t, int64((n-1)*bs), live)
	require.Equal(t, int64(pageUp((n-1)*bs)), res)

	// Freeing the last block moves nothing.
	moves = nil
	s.free(offs[n-2], units, accept)
	require.Empty(t, moves)
	require.Len(t, c.owners, n-2)

	// A refused move leaves a hole; the next alloc gets it back, zeroed.
	moves = nil
	s.free(offs[5], units, refuse)
	require.Len(t, moves, 1)
	require.Len(t, c.owners, n-2)
	require.Equal(t, []int32{5}, c.holes)
	live, _ = s.usage()
	require.Equal(t, int64((n-3)*bs), live)
	require.Equal(t, byte(6), s.mem[offs[5]], "a hole keeps its bytes until reused")
	off, err := s.alloc(units, 999)
	require.NoError(t, err)
	require.Equal(t, offs[5], off)
	require.True(t, allZero(s.bytes(off, units)), "reused hole must be zeroed")
	require.Empty(t, c.holes)
	require.Equal(t, int32(999), c.owners[5])

	// Make holes at the end, then free the block before them: all trailing
	// holes are trimmed and the pages past the end are released.
	last := len(c.owners) - 1
	moves = nil
	s.free(offs[last-1], units, refuse) // hole at last-1 (moving last refused)
	s.free(offs[last-2], units, refuse) // hole at last-2
	require.Len(t, c.holes, 2)
	s.free(offs[last], units, refuse) // the last: trims last, last-1, last-2
	require.Empty(t, c.holes)
	require.Len(t, c.owners, last-2)
	live, res = s.usage()
	require.Equal(t, int64((last-2)*bs), live)
	end := pageUp(int(base) + (last-2)*bs)
	require.Equal(t, int64(end)-int64(base), res)

	// Free everything from the front (each free moves the last block in),
	// then check that every page of the class went back to the OS.
	for len(c.owners) > 0 {
		s.free(base, units, func(owner int32, from, to uint64) bool { return true })
	}
	live, res = s.usage()
	require.Zero(t, live)
	require.Zero(t, res)
	region := s.mem[base : base+uint64(pageUp(n*bs))]
	for p, r := range pagesResident(t, region) {
		require.False(t, r, "page %d of the emptied class is still resident", p)
	}
}

func TestSlabsClasses(t *testing.T) {
	s := newTestSlabs(t, 1<<26)
	// Each class region holds one block per shard: 4 MiB per unit.
	var offs []uint64
	for _, u := range []uint32{3, 4, 5} {
		off, err := s.alloc(u, 1)
		require.NoError(t, err)
		offs = append(offs, off)
	}
	require.Equal(t, uint64(0), offs[0])
	require.Equal(t, uint64(NumShards*3*arena.UnitSize), offs[1])
	require.Equal(t, uint64(NumShards*7*arena.UnitSize), offs[2])
	// 12+16+20 MiB used of 64: a 6-unit class (24 MiB) does not fit.
	_, err := s.alloc(6, 1)
	require.ErrorIs(t, err, ErrFull)
	// Existing classes still work.
	_, err = s.alloc(4, 2)
	require.NoError(t, err)

	// A class holds at most one block per shard.
	s2 := newTestSlabs(t, 1<<26)
	for i := 0; i < NumShards; i++ {
		_, err := s2.alloc(1, int32(i))
		require.NoError(t, err)
	}
	_, err = s2.alloc(1, 0)
	require.Error(t, err)
}

// TestBlockMoves checks, through the index, that a shard's block moved into
// a hole left by another shard keeps all its entries, and that a move the
// allocator cannot make (the shard is busy) leaves a hole that is reused.
func TestBlockMoves(t *testing.T) {
	ix := newIndex(t, testReserve)
	const A, B, C, D, E = 10, 20, 30, 40, 50
	hash := make([]uint64, 0, 1000)
	m := newModel(t, ix, nil)
	add := func(sn, k int) {
		for i := 0; i < k; i++ {
			id := len(hash)
			hash = append(hash, mkHash(sn, splitmix64(uint64(id))>>(64-FPBits), 0))
			m.hash = hash
			m.put(id)
		}
	}
	add(A, 5)
	add(B, 5)
	add(C, 5)
	units := uint32((minCap + Overflow) / slotsPerUnit)
	cl := ix.slabs.classes[units]
	require.Equal(t, []int32{A, B, C}, cl.owners)
	offA, _ := unpack(ix.shards[A].table.Load())
	slotsC := ix.shardSlots(C)
	seqC := ix.shards[C].seq.Load()

	// A grows out of the class: C (last) moves into A's old block.
	add(A, 20)
	require.Equal(t, []int32{C, B}, cl.owners)
	offC, _ := unpack(ix.shards[C].table.Load())
	require.Equal(t, offA, offC, "C now lives where A was")
	require.Equal(t, slotsC, ix.shardSlots(C), "moved block keeps its slots")
	require.Equal(t, seqC+2, ix.shards[C].seq.Load(), "a move bumps the sequence")
	m.verify()

	// B grows while C is busy: C cannot move, B's old block becomes a hole.
	add(D, 3) // class now C, B, D
	require.Equal(t, []int32{C, B, D}, cl.owners)
	ix.shards[D].mu.Lock()
	offD, _ := unpack(ix.shards[D].table.Load())
	for id := len(hash); len(hash) < id+20; {
		hash = append(hash, mkHash(B, splitmix64(uint64(len(hash)))>>(64-FPBits), 0))
	}
	m.hash = hash
	for id := len(hash) - 20; id < len(hash); id++ {
		m.put(id) // B only; D is locked by us
	}
	ix.shards[D].mu.Unlock()
	off2, _ := unpack(ix.shards[D].table.Load())
	require.Equal(t, offD, off2, "locked shard must not move")
	require.Equal(t, []int32{C, -1, D}, cl.owners)
	require.Equal(t, []int32{1}, cl.holes)
	m.verify()

	// A new shard takes the hole.
	add(E, 2)
	require.Equal(t, []int32{C, E, D}, cl.owners)
	require.Empty(t, cl.holes)
	m.verify()
	st := ix.Stats()
	caps := int64(0)
	for _, sn := range []int{A, B, C, D, E} {
		caps += int64(shardCap(ix, sn) + Overflow)
	}
	require.Equal(t, 8*caps, st.LiveBytes)
}

// TestIndexFull fills a minimal reservation: Put fails with ErrFull and the
// index stays consistent and usable for shards that need no new class.
func TestIndexFull(t *testing.T) {
	ix := newIndex(t, 1<<26)
	require.Equal(t, 1<<26, len(ix.slabs.mem), "test assumes the exact reservation")
	var full int
	ids := 0
	hash := []uint64{}
	m := newModel(t, ix, nil)
	for ; ids < 200 && full == 0; ids++ {
		hash = append(hash, mkHash(7, splitmix64(uint64(ids))>>(64-FPBits), 0))
		loc := locOf(ids, 1)
		_, _, _, err := ix.Put(hash[ids], loc, func(uint64) (bool, bool) { return false, false })
		if err != nil {
			require.ErrorIs(t, err, ErrFull)
			full = ids
			break
		}
		m.cur[ids] = loc
	}
	require.NotZero(t, full, "a 64 MiB index must fill up")
	m.hash = hash
	m.verify()
	// Other shards can still take keys into existing classes.
	for i := 0; i < 1000; i++ {
		id := len(m.hash)
		m.hash = append(m.hash, mkHash(100+i, 5, 0))
		m.put(id)
	}
	m.verify()
}
