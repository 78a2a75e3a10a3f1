package index

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
)

// slabs allocates the shards' slot blocks off-heap, with no fragmentation.
//
// Every shard grows through the same sequence of block sizes, so blocks of
// one size (a class) are freed in waves as the shards outgrow it. A general
// allocator would leave most pages of a class partly used through each wave
// (about a fifth of the index's memory, measured at 10 million keys).
// Instead each class has a region of its own where its blocks are kept
// packed: when a block is freed, the class's last block is moved into the
// hole (under its shard's lock, with the shard's sequence counter bumped so
// that readers retry) and the pages past the new end are returned to the OS.
// The resident size is thus the live size rounded up to a page per class.
//
// A class region has room for one block per shard (a shard never holds two
// blocks of one class), carved from one address-space reservation when the
// class is first used.
type slabs struct {
	mem  []byte // the reservation; never moves
	base unsafe.Pointer

	mu      sync.Mutex // guards next, classes and every class's fields
	next    int        // bytes of mem given to class regions
	classes map[uint32]*class
}

type class struct {
	blockBytes int
	base       int     // byte offset of the region in mem
	owners     []int32 // shard owning each block; -1 marks a hole
	holes      []int32 // blocks freed but not filled (a move was refused)
}

func newSlabs(reserveBytes int) (*slabs, error) {
	mem, err := arena.Reserve(reserveBytes, 1<<26)
	if err != nil {
		return nil, err
	}
	return &slabs{mem: mem, base: unsafe.Pointer(unsafe.SliceData(mem)), classes: make(map[uint32]*class)}, nil
}

func (s *slabs) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := arena.Unmap(s.mem)
	s.mem, s.base, s.classes = nil, nil, nil
	return err
}

// alloc returns the byte offset of a zeroed block of units units for shard
// owner.
func (s *slabs) alloc(units uint32, owner int32) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.classes[units]
	if c == nil {
		size := pageUp(NumShards * int(units) * arena.UnitSize)
		if s.next+size > len(s.mem) {
			return 0, ErrFull
		}
		c = &class{blockBytes: int(units) * arena.UnitSize, base: s.next}
		s.next += size
		s.classes[units] = c
	}
	var i int
	if n := len(c.holes); n > 0 {
		i = int(c.holes[n-1])
		c.holes = c.holes[:n-1]
	} else {
		if len(c.owners) == NumShards {
			return 0, fmt.Errorf("index: class of %d units over-allocated", units)
		}
		i = len(c.owners)
		c.owners = append(c.owners, 0)
	}
	c.owners[i] = owner
	off := c.base + i*c.blockBytes
	clear(s.mem[off : off+c.blockBytes]) // holes and partial tail pages hold old bytes
	return uint64(off), nil
}

// free hands back the block at byte offset off. To keep the class packed it
// asks move to relocate the class's last block into the hole; move returns
// false if it cannot lock that block's shard, and the hole is then kept for
// the next alloc. move is called with s.mu held.
func (s *slabs) free(off uint64, units uint32, move func(owner int32, from, to uint64) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.classes[units]
	i := (int(off) - c.base) / c.blockBytes
	oldEnd := c.base + len(c.owners)*c.blockBytes
	c.owners[i] = -1
	c.trimHoles()
	if last := len(c.owners) - 1; i < last {
		from := uint64(c.base + last*c.blockBytes)
		if move(c.owners[last], from, off) {
			c.owners[i] = c.owners[last]
			c.owners = c.owners[:last]
		} else {
			c.holes = append(c.holes, int32(i))
		}
	}
	if newEnd := c.base + len(c.owners)*c.blockBytes; pageUp(newEnd) < pageUp(oldEnd) {
		arena.Release(s.mem[pageUp(newEnd):pageUp(oldEnd)])
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

// usage returns the bytes in live blocks and the resident bytes (each
// class's packed prefix, rounded up to a page).
func (s *slabs) usage() (live, resident int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.classes {
		n := len(c.owners) - len(c.holes)
		live += int64(n * c.blockBytes)
		resident += int64(pageUp(c.base+len(c.owners)*c.blockBytes) - c.base)
	}
	return live, resident
}

func pageUp(n int) int { return (n + arena.PageSize - 1) / arena.PageSize * arena.PageSize }
