package arena

import (
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// resident reports, page by page, whether the pages of b are resident
// (mincore). b must start on a page boundary.
func resident(t *testing.T, b []byte) []bool {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	n := (len(b) + PageSize - 1) / PageSize
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

// blk returns the bytes of a block.
func blk(a *Allocator, off uint64, units uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(a.Base(), off*UnitSize)), int(units)*UnitSize)
}

func requireZero(t *testing.T, b []byte, msgAndArgs ...any) {
	t.Helper()
	for i, c := range b {
		if c != 0 {
			require.Failf(t, "block not zeroed", "byte %d is %#x; %v", i, c, msgAndArgs)
		}
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func newAlloc(t *testing.T, reserve int) *Allocator {
	t.Helper()
	a, err := NewAllocator(reserve, reserve)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a
}

func unitsPerPage() uint32 { return uint32(PageSize / UnitSize) }

func TestMapUnmap(t *testing.T) {
	_, err := Map(0)
	require.Error(t, err)
	_, err = Map(-5)
	require.Error(t, err)
	require.NoError(t, Unmap(nil))

	for _, n := range []int{1, 100, PageSize, 3*PageSize + 7, 1 << 20} {
		b, err := Map(n)
		require.NoError(t, err)
		require.Len(t, b, n)
		require.Zero(t, uintptr(unsafe.Pointer(&b[0]))%uintptr(PageSize), "mapping not page aligned")
		requireZero(t, b)
		fill(b, 0xAB)
		require.Equal(t, byte(0xAB), b[n-1])
		require.NoError(t, Unmap(b))
	}

	// Two live mappings are distinct.
	b1, err := Map(PageSize)
	require.NoError(t, err)
	b2, err := Map(PageSize)
	require.NoError(t, err)
	fill(b1, 1)
	fill(b2, 2)
	require.Equal(t, byte(1), b1[PageSize-1])
	require.Equal(t, byte(2), b2[0])
	require.NoError(t, Unmap(b1))
	require.NoError(t, Unmap(b2))
}

func TestReserveHalves(t *testing.T) {
	// No kernel maps 4 EiB; reserve must halve until it gets something.
	a, err := NewAllocator(1<<62, 1<<20)
	require.NoError(t, err)
	c := a.Capacity()
	require.GreaterOrEqual(t, c, 1<<20)
	require.Less(t, c, 1<<62)
	require.Zero(t, c&(c-1), "capacity %d should be the request halved", c)
	require.Equal(t, int64(c), a.Stats().ReservedBytes)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close(), "second Close")

	_, err = NewAllocator(1<<62, 1<<61)
	require.Error(t, err)
}

func TestAllocZeroUnits(t *testing.T) {
	a := newAlloc(t, 1<<20)
	_, err := a.Alloc(0)
	require.Error(t, err)
	require.Equal(t, AllocStats{ReservedBytes: 1 << 20}, a.Stats())
}

func TestAllocZeroedAndReused(t *testing.T) {
	a := newAlloc(t, 1<<24)
	upp := unitsPerPage()

	// A small block sharing its page with a live neighbour: its page is not
	// released on Free, so only Alloc's clearing makes the reuse zeroed.
	keep, err := a.Alloc(1)
	require.NoError(t, err)
	small, err := a.Alloc(3)
	require.NoError(t, err)
	fill(blk(a, keep, 1), 0x11)
	requireZero(t, blk(a, small, 3))
	fill(blk(a, small, 3), 0xFF)
	a.Free(small, 3)
	require.Equal(t, byte(0xFF), blk(a, small, 3)[0], "page was shared with a live block and must stay resident")
	again, err := a.Alloc(3)
	require.NoError(t, err)
	require.Equal(t, small, again, "freed block of the same size is reused")
	requireZero(t, blk(a, again, 3), "reused block")
	require.Equal(t, byte(0x11), blk(a, keep, 1)[UnitSize-1], "neighbour untouched")

	// A block of a different size does not take the freed one.
	a.Free(again, 3)
	other, err := a.Alloc(2)
	require.NoError(t, err)
	require.NotEqual(t, small, other)
	requireZero(t, blk(a, other, 2))

	// A multi-page block, dirtied, freed (pages released), reused.
	big, err := a.Alloc(3 * upp)
	require.NoError(t, err)
	fill(blk(a, big, 3*upp), 0x5A)
	a.Free(big, 3*upp)
	big2, err := a.Alloc(3 * upp)
	require.NoError(t, err)
	require.Equal(t, big, big2)
	requireZero(t, blk(a, big2, 3*upp))

	// LIFO reuse among several freed blocks of one size; all come back zeroed.
	var offs []uint64
	for i := 0; i < 10; i++ {
		o, err := a.Alloc(5)
		require.NoError(t, err)
		fill(blk(a, o, 5), byte(i+1))
		offs = append(offs, o)
	}
	for _, o := range offs {
		a.Free(o, 5)
	}
	got := map[uint64]bool{}
	for range offs {
		o, err := a.Alloc(5)
		require.NoError(t, err)
		requireZero(t, blk(a, o, 5))
		got[o] = true
	}
	for _, o := range offs {
		require.True(t, got[o], "freed offset %d not reused", o)
	}
}

func TestResidentPageGranular(t *testing.T) {
	a := newAlloc(t, 1<<24)
	ps := int64(PageSize)
	upp := unitsPerPage()
	mem := unsafe.Slice((*byte)(a.Base()), a.Capacity())

	x, err := a.Alloc(1)
	require.NoError(t, err)
	require.Equal(t, int64(UnitSize), a.Stats().LiveBytes)
	require.Equal(t, ps, a.Stats().ResidentBytes, "one unit makes one page resident")

	y, err := a.Alloc(1) // same page
	require.NoError(t, err)
	require.Equal(t, ps, a.Stats().ResidentBytes)

	// A block straddling pages 0..2 (starts at unit 2 of page 0).
	z, err := a.Alloc(2 * upp)
	require.NoError(t, err)
	require.Equal(t, 3*ps, a.Stats().ResidentBytes)
	fill(blk(a, x, 1), 1)
	fill(blk(a, y, 1), 2)
	fill(blk(a, z, 2*upp), 3)
	require.Equal(t, []bool{true, true, true}, resident(t, mem[:3*PageSize]))

	// Freeing x leaves page 0 held by y and z.
	a.Free(x, 1)
	require.Equal(t, 3*ps, a.Stats().ResidentBytes)
	require.Equal(t, byte(1), mem[0], "page 0 must not be released while y, z live")

	// Freeing z releases pages 1 and 2 (only z touched them), not page 0.
	a.Free(z, 2*upp)
	require.Equal(t, ps, a.Stats().ResidentBytes)
	require.Equal(t, []bool{true, false, false}, resident(t, mem[:3*PageSize]))
	require.Equal(t, byte(3), mem[2*UnitSize], "z's bytes on page 0 stay until page 0 empties")

	// Freeing y empties page 0.
	a.Free(y, 1)
	st := a.Stats()
	require.Zero(t, st.ResidentBytes)
	require.Zero(t, st.LiveBytes)
	require.Equal(t, int64(UnitSize)*int64(2+2*upp), st.UsedBytes)
	require.Equal(t, []bool{false, false, false}, resident(t, mem[:3*PageSize]))
	requireZero(t, mem[:3*PageSize], "released pages read as zeros")
}

// TestAllocRandom runs random Alloc/Free sequences against a model of live
// ranges: live blocks never overlap, keep their contents, come back zeroed,
// and LiveBytes/ResidentBytes are exact.
func TestAllocRandom(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		a := newAlloc(t, 1<<26)
		mem := unsafe.Slice((*byte)(a.Base()), a.Capacity())
		type live struct {
			off   uint64
			units uint32
			tag   byte
		}
		var blocks []live
		var liveUnits uint64
		maxUnits := []uint32{1, 4, 16, 64, 300}[seed%5]
		for step := 0; step < 4000; step++ {
			if len(blocks) > 0 && (rng.IntN(100) < 45 || len(blocks) > 400) {
				k := rng.IntN(len(blocks))
				b := blocks[k]
				for i, c := range blk(a, b.off, b.units) {
					if c != b.tag {
						require.Failf(t, "block overwritten", "seed %d step %d: block at %d byte %d = %#x, want %#x", seed, step, b.off, i, c, b.tag)
					}
				}
				a.Free(b.off, b.units)
				liveUnits -= uint64(b.units)
				blocks[k] = blocks[len(blocks)-1]
				blocks = blocks[:len(blocks)-1]
			} else {
				u := 1 + uint32(rng.IntN(int(maxUnits)))
				if rng.IntN(4) == 0 {
					u = unitsPerPage()*uint32(1+rng.IntN(3)) + uint32(rng.IntN(3)) // page-ish sizes
				}
				off, err := a.Alloc(u)
				require.NoError(t, err)
				for _, b := range blocks {
					overlap := off < b.off+uint64(b.units) && b.off < off+uint64(u)
					require.False(t, overlap, "seed %d step %d: [%d,+%d) overlaps live [%d,+%d)", seed, step, off, u, b.off, b.units)
				}
				requireZero(t, blk(a, off, u), "seed", seed, "step", step)
				tag := byte(1 + rng.IntN(255))
				fill(blk(a, off, u), tag)
				blocks = append(blocks, live{off, u, tag})
				liveUnits += uint64(u)
			}
			st := a.Stats()
			require.Equal(t, int64(liveUnits)*UnitSize, st.LiveBytes)
			if step%50 == 0 || len(blocks) == 0 {
				pages := map[uint64]bool{}
				var end uint64
				for _, b := range blocks {
					first := b.off * UnitSize / uint64(PageSize)
					last := ((b.off+uint64(b.units))*UnitSize - 1) / uint64(PageSize)
					for p := first; p <= last; p++ {
						pages[p] = true
					}
					end = max(end, (b.off+uint64(b.units))*UnitSize)
				}
				require.Equal(t, int64(len(pages))*int64(PageSize), st.ResidentBytes, "seed %d step %d", seed, step)
				require.GreaterOrEqual(t, st.UsedBytes, int64(end))
				// Pages with no live block are really given back to the OS.
				usedPages := int(st.UsedBytes+int64(PageSize)-1) / PageSize
				res := resident(t, mem[:usedPages*PageSize])
				for p, r := range res {
					if r && !pages[uint64(p)] {
						require.Failf(t, "page not released", "seed %d step %d: page %d resident without live blocks", seed, step, p)
					}
				}
			}
		}
		// Free everything in random order: nothing stays resident.
		rng.Shuffle(len(blocks), func(i, j int) { blocks[i], blocks[j] = blocks[j], blocks[i] })
		for _, b := range blocks {
			a.Free(b.off, b.units)
		}
		st := a.Stats()
		require.Zero(t, st.LiveBytes)
		require.Zero(t, st.ResidentBytes)
	}
}

func TestExhausted(t *testing.T) {
	const res = 1 << 20
	a := newAlloc(t, res)
	require.Equal(t, res, a.Capacity())
	total := uint32(res / UnitSize)

	// Too large a block fails without changing anything.
	_, err := a.Alloc(total + 1)
	require.ErrorIs(t, err, ErrExhausted)
	require.Equal(t, AllocStats{ReservedBytes: res}, a.Stats())

	// Fill the reservation exactly.
	var offs []uint64
	for used := uint32(0); used < total; used += 256 {
		o, err := a.Alloc(256)
		require.NoError(t, err)
		offs = append(offs, o)
	}
	st := a.Stats()
	require.Equal(t, int64(res), st.UsedBytes)
	require.Equal(t, int64(res), st.LiveBytes)
	require.Equal(t, int64(res), st.ResidentBytes)
	_, err = a.Alloc(1)
	require.True(t, errors.Is(err, ErrExhausted), "got %v", err)
	require.Equal(t, st, a.Stats(), "failed Alloc must not change stats")

	// A freed block can be had again at its size, but not at another size.
	a.Free(offs[7], 256)
	_, err = a.Alloc(128)
	require.ErrorIs(t, err, ErrExhausted)
	o, err := a.Alloc(256)
	require.NoError(t, err)
	require.Equal(t, offs[7], o)
	_, err = a.Alloc(256)
	require.ErrorIs(t, err, ErrExhausted)
}

func TestAllocConcurrent(t *testing.T) {
	a := newAlloc(t, 1<<26)
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			type live struct {
				off   uint64
				units uint32
			}
			var mine []live
			tag := byte(w + 1)
			for i := 0; i < 3000; i++ {
				if len(mine) > 0 && rng.IntN(2) == 0 {
					k := rng.IntN(len(mine))
					b := mine[k]
					for _, c := range blk(a, b.off, b.units) {
						if c != tag {
							errs <- errors.New("block overwritten by another goroutine")
							return
						}
					}
					a.Free(b.off, b.units)
					mine[k] = mine[len(mine)-1]
					mine = mine[:len(mine)-1]
					continue
				}
				u := 1 + uint32(rng.IntN(100))
				off, err := a.Alloc(u)
				if err != nil {
					errs <- err
					return
				}
				for _, c := range blk(a, off, u) {
					if c != 0 {
						errs <- errors.New("block not zeroed")
						return
					}
				}
				fill(blk(a, off, u), tag)
				mine = append(mine, live{off, u})
			}
			for _, b := range mine {
				a.Free(b.off, b.units)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := a.Stats()
	require.Zero(t, st.LiveBytes)
	require.Zero(t, st.ResidentBytes)
}

// TestFreeListSizes checks that reuse is by exact size and that offsets
// handed out are always within the used range, sorted distinct.
func TestFreeListSizes(t *testing.T) {
	a := newAlloc(t, 1<<22)
	var offs []uint64
	for u := uint32(1); u <= 20; u++ {
		o, err := a.Alloc(u)
		require.NoError(t, err)
		offs = append(offs, o)
	}
	require.True(t, sort.SliceIsSorted(offs, func(i, j int) bool { return offs[i] < offs[j] }))
	for i := 1; i < len(offs); i++ {
		require.Equal(t, offs[i-1]+uint64(i), offs[i], "bump allocation is contiguous")
	}
	used := a.Stats().UsedBytes
	for i := len(offs) - 1; i >= 0; i-- {
		a.Free(offs[i], uint32(i+1))
	}
	for u := uint32(20); u >= 1; u-- {
		o, err := a.Alloc(u)
		require.NoError(t, err)
		require.Equal(t, offs[u-1], o, "size %d", u)
	}
	require.Equal(t, used, a.Stats().UsedBytes, "reuse must not bump")
}

func TestReserveRelease(t *testing.T) {
	b, err := Reserve(64<<20, 1<<20)
	require.NoError(t, err)
	defer func() { require.NoError(t, Unmap(b)) }()
	require.Len(t, b, 64<<20)
	ps := PageSize
	require.Equal(t, []bool{false, false, false, false}, resident(t, b[:4*ps]), "reserved pages start non-resident")
	fill(b[:4*ps], 0x77)
	require.Equal(t, []bool{true, true, true, true}, resident(t, b[:4*ps]))
	Release(b[ps : 3*ps])
	require.Equal(t, []bool{true, false, false, true}, resident(t, b[:4*ps]))
	require.Equal(t, byte(0x77), b[ps-1])
	require.Equal(t, byte(0x77), b[3*ps])
	requireZero(t, b[ps:3*ps], "released pages read as zeros")
	Release(nil) // no-op
	_, err = Reserve(1<<62, 1<<61)
	require.Error(t, err)
}
