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
	require.Len(t, c.chunks, 1, "a few pages' worth fit one chunk")
	base := uint64(c.offset(0))
	require.Zero(t, base%uint64(arena.PageSize))
	u := s.usage()
	require.Equal(t, int64(n*bs), u.live)
	require.Equal(t, int64(pageUp(n*bs)), u.resident)

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
	u = s.usage()
	require.Equal(t, int64((n-1)*bs), u.live)
	require.Equal(t, int64(pageUp((n-1)*bs)), u.resident)

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
	require.Equal(t, int64((n-3)*bs), s.usage().live)
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
	u = s.usage()
	require.Equal(t, int64((last-2)*bs), u.live)
	end := pageUp(int(base) + (last-2)*bs)
	require.Equal(t, int64(end)-int64(base), u.resident)

	// Free everything from the front (each free moves the last block in),
	// then check that every page of the class went back to the OS.
	for len(c.owners) > 0 {
		s.free(base, units, func(owner int32, from, to uint64) bool { return true })
	}
	u = s.usage()
	require.Zero(t, u.live)
	require.Zero(t, u.resident)
	require.Zero(t, u.inUse, "the emptied class gave its chunk back")
	require.Equal(t, []int32{0}, s.spare)
	region := s.mem[base : base+uint64(pageUp(n*bs))]
	for p, r := range pagesResident(t, region) {
		require.False(t, r, "page %d of the emptied class is still resident", p)
	}
}

// TestSlabsChunks: classes take address space a chunk at a time, as their
// blocks need it; a chunk a class empties goes to any class that needs one;
// the reservation runs out only when every chunk is in use.
func TestSlabsChunks(t *testing.T) {
	s := newTestSlabs(t, 4*chunkBytes)
	require.Len(t, s.mem, 4*chunkBytes)
	// Three classes, one block each: one chunk each.
	for _, u := range []uint32{3, 4, 5} {
		off, err := s.alloc(u, 1)
		require.NoError(t, err)
		require.Zero(t, off%chunkBytes, "a class's first block starts its chunk")
	}
	require.Equal(t, 3, s.carved)
	// A class takes a chunk for its first 16 blocks ...
	const units = 1 << 14 // 1 MiB blocks: 16 a chunk
	per := chunkBytes / (units * arena.UnitSize)
	var offs []uint64
	for i := 0; i < per; i++ {
		off, err := s.alloc(units, int32(i))
		require.NoError(t, err)
		if i > 0 {
			require.Equal(t, offs[i-1]+units*arena.UnitSize, off, "packed")
		}
		offs = append(offs, off)
	}
	require.Equal(t, 4, s.carved)
	c := s.classes[units]
	require.Len(t, c.chunks, 1)
	// ... and would need another for the 17th, which the reservation does
	// not have.
	_, err := s.alloc(units, 99)
	require.ErrorIs(t, err, ErrFull)
	require.ErrorContains(t, err, "IndexReserve")
	// Existing classes still allocate within their chunks.
	_, err = s.alloc(4, 2)
	require.NoError(t, err)
	// The class empties (freeing from the front moves the last block in):
	// its chunk goes back and another class takes it.
	for len(c.owners) > 0 {
		s.free(uint64(c.offset(0)), units, func(owner int32, from, to uint64) bool { return true })
	}
	require.Empty(t, c.chunks)
	require.Len(t, s.spare, 1)
	u := s.usage()
	require.Equal(t, int64(3), u.inUse)
	require.Equal(t, int64(4), u.carved)
	off, err := s.alloc(6, 1)
	require.NoError(t, err)
	require.Equal(t, offs[0], off, "the new class reuses the freed chunk")
	require.Equal(t, 4, s.carved, "no new address space")
	// A block larger than a chunk is refused.
	_, err = s.alloc(chunkBytes/arena.UnitSize+1, 1)
	require.ErrorIs(t, err, ErrFull)
}

// TestSlabsShrinkAcrossChunks frees blocks so that a class's end crosses
// chunk boundaries, with trailing holes: the emptied chunks go back, their
// pages released, and the partial chunk keeps only its used pages.
func TestSlabsShrinkAcrossChunks(t *testing.T) {
	s := newTestSlabs(t, 8*chunkBytes)
	const units = 1 << 13 // 512 KiB: 32 a chunk
	bs := units * arena.UnitSize
	per := chunkBytes / bs
	n := 3*per + 5
	for i := 0; i < n; i++ {
		off, err := s.alloc(units, int32(i))
		require.NoError(t, err)
		s.mem[off] = 1
		s.mem[off+uint64(bs)-1] = 1
	}
	c := s.classes[units]
	require.Len(t, c.chunks, 4)
	refuse := func(int32, uint64, uint64) bool { return false }
	// Holes over the last chunk and a half: refused moves keep them.
	for i := n - 2; i >= per+per/2; i-- {
		s.free(uint64(c.offset(i)), units, refuse)
	}
	require.Len(t, c.chunks, 4, "holes keep the chunks")
	// Freeing the last block trims every trailing hole.
	s.free(uint64(c.offset(n-1)), units, refuse)
	require.Len(t, c.owners, per+per/2)
	require.Empty(t, c.holes)
	require.Len(t, c.chunks, 2)
	require.Len(t, s.spare, 2)
	for _, ch := range s.spare {
		b := s.mem[int(ch)*chunkBytes : int(ch+1)*chunkBytes]
		for p, r := range pagesResident(t, b) {
			require.False(t, r, "page %d of a spare chunk is resident", p)
		}
	}
	u := s.usage()
	require.Equal(t, int64((per+per/2)*bs), u.live)
	require.Equal(t, u.live, u.resident, "blocks are page multiples: nothing else resident")
	second := s.mem[int(c.chunks[1])*chunkBytes : int(c.chunks[1]+1)*chunkBytes]
	res := pagesResident(t, second)
	half := per / 2 * bs / arena.PageSize
	for p, r := range res {
		require.Equal(t, p < half, r, "page %d of the partial chunk", p)
	}
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
// index stays consistent and usable for shards whose classes have room.
func TestIndexFull(t *testing.T) {
	const chunks = 4
	ix := newIndex(t, chunks*chunkBytes)
	require.Equal(t, chunks*chunkBytes, len(ix.slabs.mem), "test assumes the exact reservation")
	m := newModel(t, ix, nil)
	// Shard i holds enough keys for rung i: each rung is a class of its
	// own, needing a chunk; the fifth class finds none.
	full := -1
	for sn := 0; sn <= chunks && full < 0; sn++ {
		for shardCap(ix, sn) < ladder[sn] {
			id := len(m.hash)
			m.hash = append(m.hash, mkHash(sn, splitmix64(uint64(id))>>(64-FPBits), 0))
			_, _, _, err := ix.Put(m.hash[id], locOf(id, 1), func(uint64) (bool, bool) { return false, false })
			if err != nil {
				require.ErrorIs(t, err, ErrFull)
				full = sn
				break
			}
			m.cur[id] = locOf(id, 1)
		}
	}
	require.Equal(t, chunks, full, "the reservation holds %d classes", chunks)
	require.Equal(t, int64(chunks*chunkBytes), ix.Stats().AddressBytes)
	m.verify()
	// Other shards can still take keys into existing classes.
	for i := 0; i < 1000; i++ {
		id := len(m.hash)
		m.hash = append(m.hash, mkHash(100+i, 5, 0))
		m.put(id)
	}
	m.verify()
}

// TestSlabsReleaseSlack: freeing a block keeps its pages while the freed
// bytes past the class's end stay within releaseSlack (no madvise per
// free), gives them all back once they exceed it, and an allocation into
// kept pages is zeroed like any other.
func TestSlabsReleaseSlack(t *testing.T) {
	s := newTestSlabs(t, 1<<32)
	const units = 1024 // 64 KiB blocks
	bs := int(units * arena.UnitSize)
	per := releaseSlack / bs
	n := 2*per + 2
	offs := make([]uint64, n)
	for i := range offs {
		off, err := s.alloc(units, int32(i))
		require.NoError(t, err)
		offs[i] = off
		b := s.bytes(off, units)
		for j := range b {
			b[j] = 0xAB
		}
	}
	c := s.classes[units]
	base := uint64(c.offset(0))
	region := s.mem[base : base+uint64(n*bs)]
	residentBlocks := func() int {
		pages := pagesResident(t, region)
		k := 0
		for k < n && pages[k*bs/arena.PageSize] {
			k++
		}
		for i := k * bs / arena.PageSize; i < len(pages); i++ {
			require.False(t, pages[i], "page %d resident past block %d", i, k)
		}
		return k
	}
	require.Equal(t, n, residentBlocks())
	last := func(owner int32, from, to uint64) bool { return true }

	// Free per blocks from the end: exactly releaseSlack past the end,
	// nothing given back yet.
	for i := n - 1; i >= n-per; i-- {
		s.free(offs[i], units, last)
	}
	require.Len(t, c.owners, n-per)
	require.Equal(t, n, residentBlocks(), "pages given back within the slack")
	require.Equal(t, int64(n*bs), s.usage().resident)

	// Reusing a kept block zeroes it.
	off, err := s.alloc(units, 7)
	require.NoError(t, err)
	require.Equal(t, offs[n-per], off)
	require.True(t, allZero(s.bytes(off, units)))
	s.free(off, units, last)

	// One more past the slack: every page past the end goes back.
	s.free(offs[n-per-1], units, last)
	require.Len(t, c.owners, n-per-1)
	require.Equal(t, n-per-1, residentBlocks())
	require.Equal(t, int64((n-per-1)*bs), s.usage().resident)
}
