package engine

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/index"
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
// On disk an entry is spillEntryBytes = 10 bytes: the 43 bits of the key
// hash that follow the partition's bits, and the record's 37-bit location
// (spillHashBits + index.LocBits = 80). Read back, an entry is a
// spillEntry: the hash with the partition's bits restored (its lowest
// 64-spillHashBits-partition bits zero) and the location. That is every
// bit the index uses (shard and fingerprint: index.ShardBits+FPBits = 43
// <= spillHashBits), and keys whose hashes agree on all stored bits are
// told apart by reading them (at 10^9 keys in 256 partitions, about 200
// pairs). Sorting by (h, loc) sorts one key's records by location, which
// in a bulk load is input order. The record's size is not kept: a
// segment's live bytes are its record bytes less those of the records a
// later one of the same key replaced, which are read anyway. 10 bytes
// rather than 16 keep the load's writes under 1.5 times its log (issue 10).

// spillHashBits is how many hash bits past the partition's an entry keeps.
const spillHashBits = 80 - index.LocBits

const spillEntryBytes = 10

// The index must find every bit it uses in what the spill keeps.
const _ = uint(spillHashBits - (index.ShardBits + index.FPBits))

// bulkParts is the default number of partitions. At 10^9 records a
// partition holds about 3.9 million entries (62 MiB to sort); the buffers
// take bulkParts * 40 KiB = 10 MiB. (1024 partitions cost more CPU in
// the log pass at 10^7 records: 64 MiB of buffers (16-byte entries then) written at random miss
// the caches and the TLB more.)
const bulkParts = 256

// spillBlockEntries is the entries in a partition buffer (40 KiB).
const spillBlockEntries = 4096

// bulkSpillName is the spill file, in the staging directory.
const bulkSpillName = "bulk.spill"

// spillEntry is an entry read back: the hash (partition bits and the
// stored bits; the rest zero) and the record's location.
type spillEntry struct{ h, loc uint64 }

const spillEntrySize = int(unsafe.Sizeof(spillEntry{}))

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
	bits  uint // partition bits
	shift uint // partition = h >> shift
	// mem is the partitions' buffers of encoded entries (off-heap, owned
	// until release): partition p's buffer is
	// mem[p*spillBlockBytes:][:spillBlockBytes].
	mem    []byte
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
	mem, err := arena.Map(nparts * spillBlockBytes)
	if err != nil {
		return nil, fmt.Errorf("marlin: bulk load: %w", err)
	}
	f, err := fs.Create(name)
	if err != nil {
		_ = arena.Unmap(mem)
		return nil, fmt.Errorf("marlin: bulk load: create %s: %w", name, err)
	}
	return &spill{fs: fs, name: name, f: f, bits: bits, shift: 64 - bits, mem: mem,
		fill:   make([]int32, nparts),
		blocks: make([][]spillBlock, nparts),
		count:  make([]int64, nparts),
	}, nil
}

func (s *spill) parts() int { return len(s.fill) }

// part returns the partition of hash h. With one partition the shift is
// 64, which gives 0 for an unsigned value.
func (s *spill) part(h uint64) int { return int(h >> s.shift) }

const spillBlockBytes = spillBlockEntries * spillEntryBytes

func (s *spill) add(h, loc uint64) error {
	p := s.part(h)
	i := s.fill[p]
	hp := h << s.bits >> (64 - spillHashBits)
	e := s.mem[p*spillBlockBytes+int(i)*spillEntryBytes:][:spillEntryBytes]
	binary.LittleEndian.PutUint64(e, hp<<index.LocBits|loc)
	binary.LittleEndian.PutUint16(e[8:], uint16(hp>>(64-index.LocBits)))
	s.fill[p] = i + 1
	s.count[p]++
	if i+1 == spillBlockEntries {
		return s.writeBlock(p)
	}
	return nil
}

// decode turns n encoded entries of partition p at the start of dst's
// memory into dst[:n]. Entry i is read from bytes [10i, 10i+10) before it
// is written to [16i, 16i+16); going from the last down, a write only
// covers bytes of entries already decoded.
func (s *spill) decode(p int, dst []spillEntry, n int) {
	raw := entryBytes(dst)
	top := uint64(p) << s.shift // 0 when shift is 64 (one partition)
	for i := n - 1; i >= 0; i-- {
		e := raw[i*spillEntryBytes:][:spillEntryBytes]
		lo, hi := binary.LittleEndian.Uint64(e), uint64(binary.LittleEndian.Uint16(e[8:]))
		hp := lo>>index.LocBits | hi<<(64-index.LocBits)
		dst[i] = spillEntry{h: top | hp<<(64-s.bits-spillHashBits), loc: lo & index.LocMask}
	}
}

// entryBytes views entries as bytes.
func entryBytes(e []spillEntry) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(e))), len(e)*spillEntrySize)
}

func (s *spill) writeBlock(p int) error {
	n := s.fill[p]
	if n == 0 {
		return nil
	}
	b := s.mem[p*spillBlockBytes:][:int(n)*spillEntryBytes]
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
	s.mem = nil
	if err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	return nil
}

// read fills dst (len(dst) == s.count[p]) with partition p's entries.
// Safe for concurrent use (positioned reads only).
func (s *spill) read(p int, dst []spillEntry) error {
	raw := entryBytes(dst)
	at := 0
	for _, b := range s.blocks[p] {
		n := int(b.n) * spillEntryBytes
		if _, err := s.f.ReadAt(raw[at:at+n], b.off); err != nil {
			return fmt.Errorf("marlin: bulk load: read %s at %d: %w", s.name, b.off, err)
		}
		at += n
	}
	s.decode(p, dst, len(dst))
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
		s.mem = nil
	}
}
