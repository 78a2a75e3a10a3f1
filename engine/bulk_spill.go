package engine

import (
	"fmt"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/vfs"
)

// The spill is the bulk loader's radix partition of index entries by the
// top bits of the key hash, kept in one temporary file.
//
// Each partition has a buffer of spillBlockEntries entries in one off-heap
// region; a full buffer is appended to the file as a block, and the
// partition remembers where its blocks are. The index pass reads a
// partition's blocks back (one positioned read each) into a sort buffer.
// One file rather than one per partition: no file-descriptor limit to
// meet, and the writes stay sequential.
//
// Entries hold the whole 64-bit hash (the index pass needs all of it to
// tell keys apart without reading them) and, in the second word, the
// record's location and aligned size: loc<<24 | size/8 (a location is 37
// bits, a record's size is below MaxSegmentSize = 2^27). Sorting by
// (h, lw) therefore sorts one key's records by location, which in a bulk
// load is input order.

// bulkParts is the default number of partitions. At 10^9 records a
// partition holds about 3.9 million entries (62 MiB to sort); the buffers
// take bulkParts * 64 KiB = 16 MiB. (1024 partitions cost more CPU in
// the log pass at 10^7 records: 64 MiB of buffers written at random miss
// the caches and the TLB more.)
const bulkParts = 256

// spillBlockEntries is the entries in a partition buffer (64 KiB).
const spillBlockEntries = 4096

// bulkSpillName is the spill file, in the staging directory.
const bulkSpillName = "bulk.spill"

type spillEntry struct{ h, lw uint64 }

const spillEntrySize = int(unsafe.Sizeof(spillEntry{}))

func packLW(loc uint64, size int) uint64 { return loc<<24 | uint64(size/8) }
func unpackLW(lw uint64) (loc uint64, size int) {
	return lw >> 24, int(lw&(1<<24-1)) * 8
}

type spillBlock struct {
	off int64
	n   int32
}

// spill is used by the builder's goroutine only, during the log pass;
// the index pass only reads blocks and the file.
type spill struct {
	fs    vfs.FS
	name  string
	f     vfs.File
	shift uint // partition = h >> shift
	// mem is the partitions' buffers (off-heap, owned until release); bufs
	// views it as entries: partition p's buffer is
	// bufs[p*spillBlockEntries:][:spillBlockEntries].
	mem    []byte
	bufs   []spillEntry
	fill   []int32        // entries in each partition's buffer
	blocks [][]spillBlock // each partition's blocks in the file
	count  []int64        // entries per partition
	off    int64          // the file's size
}

func newSpill(fs vfs.FS, name string, nparts int) (*spill, error) {
	bits := uint(0)
	for 1<<bits < nparts {
		bits++
	}
	mem, err := arena.Map(nparts * spillBlockEntries * spillEntrySize)
	if err != nil {
		return nil, fmt.Errorf("marlin: bulk load: %w", err)
	}
	f, err := fs.Create(name)
	if err != nil {
		_ = arena.Unmap(mem)
		return nil, fmt.Errorf("marlin: bulk load: create %s: %w", name, err)
	}
	return &spill{fs: fs, name: name, f: f, shift: 64 - bits, mem: mem,
		bufs:   unsafe.Slice((*spillEntry)(unsafe.Pointer(unsafe.SliceData(mem))), len(mem)/spillEntrySize),
		fill:   make([]int32, nparts),
		blocks: make([][]spillBlock, nparts),
		count:  make([]int64, nparts),
	}, nil
}

func (s *spill) parts() int { return len(s.fill) }

// part returns the partition of hash h. With one partition the shift is
// 64, which gives 0 for an unsigned value.
func (s *spill) part(h uint64) int { return int(h >> s.shift) }

func (s *spill) add(h, loc uint64, size int) error {
	p := s.part(h)
	i := s.fill[p]
	s.bufs[p*spillBlockEntries+int(i)] = spillEntry{h, packLW(loc, size)}
	s.fill[p] = i + 1
	s.count[p]++
	if i+1 == spillBlockEntries {
		return s.writeBlock(p)
	}
	return nil
}

// entryBytes views entries as bytes (the file holds them in memory order:
// it is read back by this same process only).
func entryBytes(e []spillEntry) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(e))), len(e)*spillEntrySize)
}

func (s *spill) writeBlock(p int) error {
	n := s.fill[p]
	if n == 0 {
		return nil
	}
	b := entryBytes(s.bufs[p*spillBlockEntries : p*spillBlockEntries+int(n)])
	if _, err := s.f.Write(b); err != nil {
		return fmt.Errorf("marlin: bulk load: write %s at %d: %w", s.name, s.off, err)
	}
	s.blocks[p] = append(s.blocks[p], spillBlock{s.off, n})
	s.off += int64(len(b))
	s.fill[p] = 0
	return nil
}

// finish writes the partial buffers out and frees them. The file is not
// fsynced: it is scratch, read back by this process and then removed.
func (s *spill) finish() error {
	for p := range s.fill {
		if err := s.writeBlock(p); err != nil {
			return err
		}
	}
	err := arena.Unmap(s.mem)
	s.mem, s.bufs = nil, nil
	if err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	return nil
}

// read fills dst (len(dst) == s.count[p]) with partition p's entries.
// Safe for concurrent use (positioned reads only).
func (s *spill) read(p int, dst []spillEntry) error {
	i := 0
	for _, b := range s.blocks[p] {
		if _, err := s.f.ReadAt(entryBytes(dst[i:i+int(b.n)]), b.off); err != nil {
			return fmt.Errorf("marlin: bulk load: read %s at %d: %w", s.name, b.off, err)
		}
		i += int(b.n)
	}
	return nil
}

// remove closes and deletes the file.
func (s *spill) remove() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("marlin: bulk load: close %s: %w", s.name, err)
	}
	if err := s.fs.Remove(s.name); err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	return nil
}

// release frees what remove and finish did not (on an error path).
func (s *spill) release() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	if s.mem != nil {
		_ = arena.Unmap(s.mem)
		s.mem, s.bufs = nil, nil
	}
}
