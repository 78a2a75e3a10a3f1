package engine

import (
	"fmt"
	"sync"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/vfs"
)

// bulkWriter writes the log pass's segment buffers in a goroutine of its
// own, so that the copy into the page cache (the write system call) runs
// on the second core while the builder encodes the next buffer.
//
// Ownership: bufs are off-heap, bulkWriterBufs of bulkWriteBuffer bytes.
// A buffer belongs to the builder until submit, then to the writer
// goroutine until it is back in free. Writes are applied in submission
// order (one goroutine, one channel). wait returns once every submitted
// write is done; the first error is sticky and returned by every later
// submit and wait.
type bulkWriter struct {
	bufs [][]byte
	work chan bulkWrite
	free chan []byte
	wg   sync.WaitGroup // submitted writes not yet done
	exit chan struct{}  // closed when the goroutine returns

	mu  sync.Mutex // guards err
	err error
}

type bulkWrite struct {
	f    vfs.File
	name string
	at   int64 // file offset of buf[0], for the error
	buf  []byte
}

const bulkWriterBufs = 2

func newBulkWriter() (*bulkWriter, error) {
	w := &bulkWriter{work: make(chan bulkWrite, bulkWriterBufs), free: make(chan []byte, bulkWriterBufs),
		exit: make(chan struct{})}
	for range bulkWriterBufs {
		b, err := arena.Map(bulkWriteBuffer)
		if err != nil {
			w.unmap()
			return nil, fmt.Errorf("marlin: bulk load: %w", err)
		}
		w.bufs = append(w.bufs, b)
		w.free <- b
	}
	go w.run()
	return w, nil
}

func (w *bulkWriter) run() {
	defer close(w.exit)
	for wr := range w.work {
		if w.failed() == nil {
			if _, err := wr.f.Write(wr.buf); err != nil {
				w.mu.Lock()
				w.err = fmt.Errorf("marlin: bulk load: write %s at %d: %w", wr.name, wr.at, err)
				w.mu.Unlock()
			}
		}
		w.free <- wr.buf[:cap(wr.buf)]
		w.wg.Done()
	}
}

func (w *bulkWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// get returns an empty buffer (waiting for one to be written out).
func (w *bulkWriter) get() []byte { return <-w.free }

// submit queues buf to be appended to f.
func (w *bulkWriter) submit(f vfs.File, name string, at int64, buf []byte) error {
	if err := w.failed(); err != nil {
		w.free <- buf[:cap(buf)]
		return err
	}
	w.wg.Add(1)
	w.work <- bulkWrite{f, name, at, buf}
	return nil
}

// wait waits for every submitted write and returns the first error.
func (w *bulkWriter) wait() error {
	w.wg.Wait()
	return w.failed()
}

// close stops the goroutine and frees the buffers. Nothing may be
// submitted afterwards.
func (w *bulkWriter) close() {
	close(w.work)
	<-w.exit
	w.unmap()
}

func (w *bulkWriter) unmap() {
	for _, b := range w.bufs {
		_ = arena.Unmap(b)
	}
	w.bufs = nil
}
