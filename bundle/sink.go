package bundle

import (
	"bufio"
	"io"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/vfs"
)

// sink collects a section that is written after the data (entries, then
// fences) while the data streams into the output: in memory outside the
// Go heap up to its capacity, then in a scratch file. The sink owns its
// memory and file until release.
type sink struct {
	b    *Builder
	mem  []byte // arena.Map of cap bytes; len: bytes held
	f    vfs.File
	w    *bufio.Writer
	name string
	size int64 // bytes in the file
}

// sinkChunk is the size of the reads that replay a sink's file part; a
// multiple of entrySize and fenceSize.
const sinkChunk = 1 << 20

func (b *Builder) newSink(capacity int) (*sink, error) {
	capacity = max(capacity, 64<<10)
	mem, err := arena.Map(capacity)
	if err != nil {
		return nil, err
	}
	// Huge pages where the kernel has them: first touches of 4 KiB pages
	// run at a few hundred MB/s on the reference VM. Only a hint.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	return &sink{b: b, mem: mem[:0]}, nil
}

// write appends p: to memory while it fits, else (from then on) to the
// file.
func (s *sink) write(p []byte) error {
	if s.f == nil && len(s.mem)+len(p) <= cap(s.mem) {
		s.mem = append(s.mem, p...)
		return nil
	}
	if s.f == nil {
		name, err := s.b.scratchName("spill")
		if err != nil {
			return err
		}
		f, err := s.b.fs.Create(name)
		if err != nil {
			return err
		}
		s.f, s.name, s.w = f, name, bufio.NewWriterSize(f, runWriteBuf)
	}
	s.size += int64(len(p))
	_, err := s.w.Write(p)
	return err
}

// replay calls fn with the sink's bytes in order, in chunks whose lengths
// are multiples of sinkChunk except the last (the memory part is one
// chunk). The slices are valid during the call.
func (s *sink) replay(fn func([]byte) error) error {
	if err := fn(s.mem); err != nil {
		return err
	}
	if s.f == nil {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	r := io.NewSectionReader(s.f, 0, s.size)
	buf := make([]byte, sinkChunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			s.b.stats.ScratchRead += int64(n)
			if ferr := fn(buf[:n]); ferr != nil {
				return ferr
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return nil
		default:
			return err
		}
	}
}

// release frees the memory and removes the file.
func (s *sink) release() {
	if s.mem != nil {
		_ = arena.Unmap(s.mem[:cap(s.mem)])
		s.mem = nil
	}
	if s.f != nil {
		_ = s.f.Close()
		s.b.removeTemp(s.name)
		s.f = nil
	}
}
