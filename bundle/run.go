package bundle

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/marlinkv/marlin/vfs"
)

// Sorted runs: the external sort's temporary files.
//
// A run is a sequence of records sorted by (hash, order added):
//
//	hash u64 LE | uvarint key length | uvarint value length | key | value
//
// Runs are written in the order of the pairs they hold (every pair of run
// i was added before every pair of run i+1), and the merge breaks ties
// between equal hashes by run index, so pairs with equal hashes come out
// of the merge in the order they were added: the run index and the
// position in the run are the sequence number that "the last value wins"
// needs. Each run's length, record count and CRC-32C are kept in memory
// (a run is never read by another process) and checked when it has been
// read to its end, so a run damaged on disk fails the build instead of
// going into the bundle.

// runFile is a run on disk.
type runFile struct {
	name  string
	size  int64
	count int64
	crc   uint32
}

// runWriteBuf is a run writer's buffer.
const runWriteBuf = 64 << 10

// runWriter writes one run.
type runWriter struct {
	f   vfs.File
	w   *bufio.Writer
	run runFile
	hdr [8 + 2*binary.MaxVarintLen64]byte
}

// writeRun creates a run, lets fill add its records, and closes it. On an
// error the run's file is removed.
func (b *Builder) writeRun(fill func(*runWriter) error) (*runFile, error) {
	rw, err := b.newRunWriter()
	if err != nil {
		return nil, err
	}
	if err := fill(rw); err != nil {
		_ = rw.f.Close()
		b.removeTemp(rw.run.name)
		return nil, err
	}
	run, err := rw.close()
	if err != nil {
		b.removeTemp(run.name)
		return nil, err
	}
	b.stats.Runs++
	b.nruns.Add(1)
	return run, nil
}

func (b *Builder) newRunWriter() (*runWriter, error) {
	name, err := b.scratchName("run")
	if err != nil {
		return nil, err
	}
	f, err := b.fs.Create(name)
	if err != nil {
		return nil, err
	}
	return &runWriter{f: f, w: bufio.NewWriterSize(f, runWriteBuf), run: runFile{name: name}}, nil
}

// add writes a pair.
func (rw *runWriter) add(h uint64, key, value []byte) error {
	p := binary.LittleEndian.AppendUint64(rw.hdr[:0], h)
	p = binary.AppendUvarint(p, uint64(len(key)))
	p = binary.AppendUvarint(p, uint64(len(value)))
	if err := rw.write(p); err != nil {
		return err
	}
	if err := rw.write(key); err != nil {
		return err
	}
	rw.run.count++
	return rw.write(value)
}

// addRecord writes a run record as the run buffer holds it.
func (rw *runWriter) addRecord(rec []byte) error {
	rw.run.count++
	return rw.write(rec)
}

func (rw *runWriter) write(p []byte) error {
	rw.run.crc = crc32.Update(rw.run.crc, castagnoli, p)
	rw.run.size += int64(len(p))
	_, err := rw.w.Write(p)
	return err
}

// close flushes and closes the run. It is not fsynced: a run lives only
// as long as this process's build.
func (rw *runWriter) close() (*runFile, error) {
	err := rw.w.Flush()
	if cerr := rw.f.Close(); err == nil {
		err = cerr
	}
	return &rw.run, err
}

// runReader reads a run back in order. Its current record's key and value
// alias its buffer (or big, for a record larger than the buffer) and are
// valid until advance.
type runReader struct {
	run    *runFile
	idx    int // the run's position in the merge: breaks ties
	f      vfs.File
	r      *bufio.Reader
	left   int64  // bytes not yet consumed
	pend   int    // bytes of the current record still in r, consumed by advance
	crc    uint32 // of the bytes consumed
	count  int64  // records consumed
	big    []byte // a record larger than the buffer (heap; the largest pair)
	h      uint64
	key    []byte
	value  []byte
	done   bool
	onRead func(n int) // counts bytes read (statistics)
}

func openRun(fs vfs.FS, run *runFile, idx, bufSize int) (*runReader, error) {
	f, err := fs.Open(run.name)
	if err != nil {
		return nil, err
	}
	rr := &runReader{run: run, idx: idx, f: f, left: run.size,
		r: bufio.NewReaderSize(io.NewSectionReader(f, 0, run.size), bufSize)}
	return rr, nil
}

func (rr *runReader) damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{errRunDamaged, rr.run.name}, args...)...)
}

// advance consumes the current record and reads the next; at the end of
// the run it checks the run's CRC and count and sets done.
func (rr *runReader) advance() error {
	if rr.pend > 0 {
		p, _ := rr.r.Peek(rr.pend) // buffered: cannot fail
		rr.crc = crc32.Update(rr.crc, castagnoli, p)
		_, _ = rr.r.Discard(rr.pend)
		rr.left -= int64(rr.pend)
		rr.pend = 0
	}
	if rr.left == 0 {
		rr.done = true
		if rr.crc != rr.run.crc || rr.count != rr.run.count {
			return rr.damaged("checksum %#08x and %d records, written %#08x and %d", rr.crc, rr.count, rr.run.crc, rr.run.count)
		}
		return nil
	}
	hp, err := rr.r.Peek(int(min(rr.left, int64(8+2*binary.MaxVarintLen64))))
	if err != nil {
		return fmt.Errorf("reading %s: %w", rr.run.name, err)
	}
	if len(hp) < 10 {
		return rr.damaged("a %d-byte record header", len(hp))
	}
	h := binary.LittleEndian.Uint64(hp)
	klen, a := binary.Uvarint(hp[8:])
	if a <= 0 {
		return rr.damaged("bad key length")
	}
	vlen, c := binary.Uvarint(hp[8+a:])
	if c <= 0 {
		return rr.damaged("bad value length")
	}
	hdr := 8 + a + c
	if klen > MaxKeyLen || vlen > uint64(rr.left) || int64(hdr)+int64(klen+vlen) > rr.left {
		return rr.damaged("a record of %d and %d bytes with %d bytes left", klen, vlen, rr.left)
	}
	total := hdr + int(klen+vlen)
	rr.h = h
	rr.count++
	if rr.onRead != nil {
		rr.onRead(total)
	}
	if total <= rr.r.Size() {
		p, err := rr.r.Peek(total)
		if err != nil {
			return fmt.Errorf("reading %s: %w", rr.run.name, err)
		}
		rr.key, rr.value = p[hdr:hdr+int(klen)], p[hdr+int(klen):]
		rr.pend = total
		return nil
	}
	// Larger than the buffer: read it into big.
	p, _ := rr.r.Peek(hdr)
	rr.crc = crc32.Update(rr.crc, castagnoli, p)
	_, _ = rr.r.Discard(hdr)
	if cap(rr.big) < total-hdr {
		rr.big = make([]byte, total-hdr)
	}
	rr.big = rr.big[:total-hdr]
	if _, err := io.ReadFull(rr.r, rr.big); err != nil {
		return fmt.Errorf("reading %s: %w", rr.run.name, err)
	}
	rr.crc = crc32.Update(rr.crc, castagnoli, rr.big)
	rr.left -= int64(total)
	rr.key, rr.value = rr.big[:klen], rr.big[klen:]
	return nil
}

func (rr *runReader) close() error { return rr.f.Close() }

// merger yields the records of several runs in (hash, run index, position)
// order: a heap of run readers keyed by their current record.
type merger struct {
	h    runHeap
	all  []*runReader
	last *runReader // the reader whose record next returned; advanced first thing by the next call
}

type runHeap []*runReader

func (q runHeap) Len() int { return len(q) }
func (q runHeap) Less(i, j int) bool {
	a, b := q[i], q[j]
	return a.h < b.h || (a.h == b.h && a.idx < b.idx)
}
func (q runHeap) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *runHeap) Push(x any)   { *q = append(*q, x.(*runReader)) }
func (q *runHeap) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// newMerger opens runs, each with a read buffer of bufSize bytes.
func newMerger(fs vfs.FS, runs []*runFile, bufSize int, onRead func(int)) (*merger, error) {
	m := &merger{}
	for i, run := range runs {
		rr, err := openRun(fs, run, i, bufSize)
		if err != nil {
			m.close()
			return nil, err
		}
		rr.onRead = onRead
		m.all = append(m.all, rr)
		if err := rr.advance(); err != nil {
			m.close()
			return nil, err
		}
		if !rr.done {
			m.h = append(m.h, rr)
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// next returns the next record; its key and value are valid until the next
// call. ok is false at the end.
func (m *merger) next() (h uint64, key, value []byte, ok bool, err error) {
	if m.last != nil {
		rr := m.last
		m.last = nil
		if err := rr.advance(); err != nil {
			return 0, nil, nil, false, err
		}
		if rr.done {
			heap.Pop(&m.h)
		} else {
			heap.Fix(&m.h, 0)
		}
	}
	if len(m.h) == 0 {
		return 0, nil, nil, false, nil
	}
	rr := m.h[0]
	m.last = rr
	return rr.h, rr.key, rr.value, true, nil
}

func (m *merger) close() {
	for _, rr := range m.all {
		_ = rr.close()
	}
	m.all, m.h = nil, nil
}
