package index

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
)

// slabs allocates the shards' slot blocks off-heap, with no fragmentation
// and with address space proportional to the blocks in use.
//
// Every shard grows through the same ladder of block sizes (classes.go), so
// blocks of one size (a class) are freed in waves as the shards outgrow it.
// A general allocator would leave most pages of a class partly used through
// each wave (about a fifth of the index's memory, measured at 10 million
// keys). Instead each class keeps its blocks packed: block i of a class is
// the i-th block of the class's sequence of chunks. When a block is freed,
// the class's last block is moved into the hole (under its shard's lock,
// with the shard's sequence counter bumped so that readers retry) and the
// pages past the new end are returned to the OS. The resident size is thus
// the live size plus at most one partial page per chunk in use.
//
// Chunks (chunkBytes, page-aligned) are carved from one address-space
// reservation when a class needs room, and a chunk a class no longer uses
// goes back to a free list (its pages already released) from which any
// class takes it. So the address space carved is the largest number of
// chunks ever in use at once, and chunks in use are at most
//
//	Σ over classes ⌈blocks_k / perChunk_k⌉ ≤ (live bytes + hole bytes) / (chunkBytes − largest block) + classes in use
//
// (capacity_test.go computes this at 10^9 keys). Before chunks, every class
// had a region for one block per shard, carved when the class was first
// used, and the classes' regions filled a 256 GiB reservation at 40% of a
// billion keys.
//
// A chunk is never unmapped before Close, so a reader scanning a block that
// was freed, moved or whose chunk went to another class reads stale slots
// or zeros, never a fault (index.go explains why stale slots are harmless).
type slabs struct {
	mem  []byte // the reservation; never moves
	base unsafe.Pointer

	mu       sync.Mutex // guards everything below and every class's fields
	carved   int        // chunks carved from mem: the address-space high-water mark
	spare    []int32    // carved chunks no class holds; their pages are released
	chunkPos []int32    // for each carved chunk, its position in its class's chunks
	classes  map[uint32]*class
}

// chunkBytes is the unit in which classes take address space. A block never
// spans two chunks, so it bounds the largest block (maxBlockSlots); a class
// wastes less than one block per chunk and at most one partly used chunk.
const chunkBytes = 16 << 20

type class struct {
	blockBytes int
	perChunk   int     // blocks per chunk
	chunks     []int32 // chunk numbers: block i lives in chunks[i/perChunk]
	owners     []int32 // shard owning each block; -1 marks a hole
	holes      []int32 // blocks freed but not filled (a move was refused)
	// populated: blocks [0, populated) of the class were made resident
	// ahead by a bulk load (allocBlock with populate); trimLoad releases
	// what the load did not use.
	populated int
	// touched: blocks [0, touched) may have resident pages (the most
	// blocks the class held since its pages past the end were last
	// released). Invariant: touched >= len(owners), and the pages past
	// block touched's end in the class's chunks are released.
	touched int
}

// releaseSlack is how many bytes of freed blocks a class keeps resident
// past its end before giving their pages back. In a load every shard's
// growth frees a block; releasing its pages at each free was a madvise
// (and a TLB shootdown) per growth, and the next allocation faulted them
// in again: a third of the time of batched puts at 10^7 keys (issue 10).
// Memory: at most this much per class in use (a few classes are in use at
// once as the shards climb the ladder in waves).
const releaseSlack = 512 << 10

// populateAhead is how far a bulk load makes a class's pages resident
// ahead of its blocks, in bytes: big enough that one call replaces
// hundreds of page faults, small enough that what trimLoad gives back is
// little.
const populateAhead = 2 << 20

func newSlabs(reserveBytes int) (*slabs, error) {
	mem, err := arena.Reserve(reserveBytes, chunkBytes)
	if err != nil {
		return nil, err
	}
	// Keep whole chunks only; the reservation is page-aligned, so chunks are.
	mem = mem[:len(mem)/chunkBytes*chunkBytes]
	return &slabs{mem: mem, base: unsafe.Pointer(unsafe.SliceData(mem)), classes: make(map[uint32]*class)}, nil
}

func (s *slabs) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := arena.Unmap(s.mem[:cap(s.mem)])
	s.mem, s.base, s.classes = nil, nil, nil
	return err
}

// offset returns the byte offset in mem of block i of c.
func (c *class) offset(i int) int {
	return int(c.chunks[i/c.perChunk])*chunkBytes + i%c.perChunk*c.blockBytes
}

// used returns the bytes of the j-th chunk of c that hold blocks when c
// has n blocks (holes included).
func (c *class) used(j, n int) int {
	return min(max(n-j*c.perChunk, 0), c.perChunk) * c.blockBytes
}

// alloc returns the byte offset of a zeroed block of units units for shard
// owner, or ErrFull when the reservation has no chunk left for it.
func (s *slabs) alloc(units uint32, owner int32) (uint64, error) {
	return s.allocBlock(units, owner, true, false)
}

// allocBlock is alloc; zero false skips zeroing the block, for a caller
// that writes every slot of it before publishing it (rehash): that saves
// one pass over the block, a sixth of the index's cost in a load at 10^9
// keys (issue 10). populate (a bulk load: LoadShard) makes the class's
// pages resident populateAhead bytes at a time, within the block's chunk;
// the pages past the class's end are given back by trimLoad.
func (s *slabs) allocBlock(units uint32, owner int32, zero, populate bool) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.classes[units]
	if c == nil {
		bb := int(units) * arena.UnitSize
		if bb > chunkBytes {
			return 0, fmt.Errorf("%w: a block of %d bytes exceeds a chunk", ErrFull, bb)
		}
		c = &class{blockBytes: bb, perChunk: chunkBytes / bb}
		s.classes[units] = c
	}
	var i int
	if n := len(c.holes); n > 0 {
		i = int(c.holes[n-1])
		c.holes = c.holes[:n-1]
	} else {
		i = len(c.owners)
		if i == len(c.chunks)*c.perChunk {
			ch, err := s.takeChunk()
			if err != nil {
				return 0, err
			}
			s.chunkPos[ch] = int32(len(c.chunks))
			c.chunks = append(c.chunks, ch)
		}
		c.owners = append(c.owners, 0)
		c.touched = max(c.touched, len(c.owners))
	}
	c.owners[i] = owner
	off := c.offset(i)
	if zero {
		clear(s.mem[off : off+c.blockBytes]) // holes and reused pages may hold old bytes
	}
	if populate && i >= c.populated {
		chunkStart := int(c.chunks[i/c.perChunk]) * chunkBytes
		chunkEnd := chunkStart + c.perChunk*c.blockBytes
		from := off / arena.PageSize * arena.PageSize
		to := min(pageUp(off+max(c.blockBytes, populateAhead)), pageUp(chunkEnd))
		arena.Populate(s.mem[from:to])
		c.populated = i/c.perChunk*c.perChunk + min((to-chunkStart)/c.blockBytes, c.perChunk)
	}
	return uint64(off), nil
}

// trimLoad gives back the pages a bulk load made resident past each
// class's last block, so that residency is again the blocks in use plus at
// most a partial page per chunk.
func (s *slabs) trimLoad() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.classes {
		if c.populated == 0 {
			continue
		}
		n := len(c.owners)
		for j := n / c.perChunk; j < len(c.chunks) && j*c.perChunk < c.populated; j++ {
			start := int(c.chunks[j]) * chunkBytes
			if from, to := pageUp(c.used(j, n)), pageUp(c.perChunk*c.blockBytes); from < to {
				arena.Release(s.mem[start+from : start+to])
			}
		}
		c.populated = 0
		c.touched = n
	}
}

// takeChunk returns a free chunk, carving a new one if there is none.
func (s *slabs) takeChunk() (int32, error) {
	if n := len(s.spare); n > 0 {
		ch := s.spare[n-1]
		s.spare = s.spare[:n-1]
		return ch, nil
	}
	if (s.carved+1)*chunkBytes > len(s.mem) {
		return 0, fmt.Errorf("%w (%d MiB reserved, all in use: raise IndexReserve)", ErrFull, len(s.mem)>>20)
	}
	s.carved++
	s.chunkPos = append(s.chunkPos, 0)
	return int32(s.carved - 1), nil
}

// free hands back the block at byte offset off. To keep the class packed it
// asks move to relocate the class's last block into the hole; move returns
// false if it cannot lock that block's shard, and the hole is then kept for
// the next alloc. move is called with s.mu held.
func (s *slabs) free(off uint64, units uint32, move func(owner int32, from, to uint64) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.classes[units]
	ch := int(off) / chunkBytes
	i := int(s.chunkPos[ch])*c.perChunk + (int(off)-ch*chunkBytes)/c.blockBytes
	c.owners[i] = -1
	c.trimHoles()
	if last := len(c.owners) - 1; i < last {
		from := uint64(c.offset(last))
		if move(c.owners[last], from, off) {
			c.owners[i] = c.owners[last]
			c.owners = c.owners[:last]
		} else {
			c.holes = append(c.holes, int32(i))
		}
	}
	s.shrink(c)
}

// shrink gives chunks c no longer uses back to the free list, their pages
// released, and returns to the OS the pages past c's end once they exceed
// releaseSlack.
func (s *slabs) shrink(c *class) {
	newN := len(c.owners)
	release := (c.touched-newN)*c.blockBytes > releaseSlack
	for j := len(c.chunks) - 1; j >= 0 && j*c.perChunk >= newN-c.perChunk+1; j-- {
		empty := c.used(j, newN) == 0
		if release || empty {
			start := int(c.chunks[j]) * chunkBytes
			if from, to := pageUp(c.used(j, newN)), pageUp(c.used(j, c.touched)); from < to {
				arena.Release(s.mem[start+from : start+to])
			}
		}
		if empty {
			s.spare = append(s.spare, c.chunks[j])
			c.chunks = c.chunks[:j]
		}
	}
	if release {
		c.touched = newN
	} else {
		// Chunks given back took their pages with them.
		c.touched = min(c.touched, len(c.chunks)*c.perChunk)
	}
}

// trimHoles drops trailing holes (and forgets them as holes).
func (c *class) trimHoles() {
	for n := len(c.owners); n > 0 && c.owners[n-1] == -1; n = len(c.owners) {
		c.owners = c.owners[:n-1]
		for j, h := range c.holes {
			if int(h) == n-1 {
				c.holes = append(c.holes[:j], c.holes[j+1:]...)
				break
			}
		}
	}
}

// slabUsage describes the allocator's memory.
type slabUsage struct {
	live, resident int64 // bytes in live blocks; resident pages
	carved, inUse  int64 // chunks ever carved (address space), chunks held by classes
	classes        int   // classes holding at least one block
	reserve        int64 // bytes of the reservation
}

func (s *slabs) usage() slabUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := slabUsage{carved: int64(s.carved), reserve: int64(len(s.mem))}
	for _, c := range s.classes {
		n := len(c.owners)
		u.live += int64((n - len(c.holes)) * c.blockBytes)
		for j := range c.chunks {
			u.resident += int64(pageUp(c.used(j, c.touched)))
		}
		u.inUse += int64(len(c.chunks))
		if n > 0 {
			u.classes++
		}
	}
	return u
}

func pageUp(n int) int { return (n + arena.PageSize - 1) / arena.PageSize * arena.PageSize }
