package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// runBulkLoad is 'marlin load --bulk': the loader's parser runs in its own
// goroutine and hands chunks of pairs to engine.BulkLoad, so parsing and
// building overlap on two cores.
func runBulkLoad(l *loader, dir string, files []string, eo engine.Options, quiet bool, stdout, stderr io.Writer) error {
	feed := newPairFeed()
	l.sink = feed.add
	go func() {
		var err error
		for _, name := range files {
			if err = l.loadFile(name); err != nil {
				break
			}
		}
		feed.finish(err)
	}()
	start := time.Now()
	var bo engine.BulkOptions
	if !quiet {
		term := isTerminal(stderr)
		last := time.Now()
		bo.Progress = func(p engine.BulkProgress) {
			if time.Since(last) < time.Second && p.Phase != "publish" {
				return
			}
			last = time.Now()
			el := time.Since(start)
			msg := fmt.Sprintf("load --bulk: %s: %s pairs, %s, %s read, %s", p.Phase, comma(p.Records),
				rate(p.Records, el), ibytes(l.read.Load()), el.Round(time.Second))
			if p.Phase == "index" {
				msg += fmt.Sprintf(", partition %d of %d", p.PartsDone, p.Parts)
			}
			if term {
				fmt.Fprintf(stderr, "\r%s\x1b[K", msg)
			} else {
				fmt.Fprintln(stderr, msg)
			}
		}
	}
	st, err := engine.BulkLoad(dir, &eo, feed, &bo)
	l.failed.Store(true) // the parser stops at its next line
	feed.stop()
	if !quiet && isTerminal(stderr) {
		fmt.Fprintln(stderr)
	}
	elapsed := time.Since(start)
	var le *lineError
	switch {
	case errors.As(err, &le):
		return fmt.Errorf("%w; stopped there: --bulk loads all or nothing, so nothing was loaded into %s", le, dir)
	case err != nil:
		return fmt.Errorf("bulk load into %s: %w (nothing was loaded)", dir, err)
	}
	fmt.Fprintf(stdout, "loaded %s from %s into %s in %s (%s pairs/s); it holds %s keys\n",
		plural(st.Records, "pair", "pairs"), plural(int64(len(files)), "file", "files"), dir,
		elapsed.Round(time.Millisecond), comma(int64(float64(st.Records)/max(elapsed.Seconds(), 1e-9))), comma(st.Keys))
	if !quiet {
		fmt.Fprintf(stderr, "load --bulk: log %s in %d segments, snapshot %s, temporary %s; log pass %s, index pass %s, publish %s\n",
			ibytes(st.LogBytes), st.Segments, ibytes(st.SnapshotBytes), ibytes(st.SpillBytes),
			st.LogPass.Round(time.Millisecond), st.IndexPass.Round(time.Millisecond), st.Publish.Round(time.Millisecond))
	}
	return nil
}

// pairFeed carries pairs from the parsing goroutine to BulkLoad in chunks.
// A chunk's bytes are owned by the parser until sent, then by the reader
// until it asks for the next chunk (it goes back to the parser through
// free).
type pairFeed struct {
	ch   chan *pairChunk
	free chan *pairChunk
	done chan struct{} // closed by stop: the reader wants no more
	cur  *pairChunk    // parser's chunk being filled
	rd   *pairChunk    // reader's chunk being read
	ri   int
	err  error // the parser's error; written before ch is closed
}

type pairChunk struct {
	data []byte
	ends []int // for pair i: key ends at ends[2i], value at ends[2i+1]
}

const (
	chunkPairs = 8192
	chunkBytes = 1 << 20
)

func newPairFeed() *pairFeed {
	f := &pairFeed{ch: make(chan *pairChunk, 2), free: make(chan *pairChunk, 4), done: make(chan struct{})}
	for range 3 {
		f.free <- &pairChunk{}
	}
	f.cur = &pairChunk{}
	return f
}

// add is the loader's sink (parser goroutine).
func (f *pairFeed) add(k, v []byte) {
	c := f.cur
	c.data = append(c.data, k...)
	c.ends = append(c.ends, len(c.data))
	c.data = append(c.data, v...)
	c.ends = append(c.ends, len(c.data))
	if len(c.ends) >= 2*chunkPairs || len(c.data) >= chunkBytes {
		f.send()
	}
}

// send hands the current chunk over; it gives up (dropping it) when the
// reader stopped.
func (f *pairFeed) send() {
	if len(f.cur.ends) == 0 {
		return
	}
	select {
	case f.ch <- f.cur:
	case <-f.done:
		return
	}
	select {
	case f.cur = <-f.free:
	case <-f.done:
		f.cur = &pairChunk{}
	}
	f.cur.data, f.cur.ends = f.cur.data[:0], f.cur.ends[:0]
}

// finish sends the last chunk and ends the feed with err (nil: EOF).
func (f *pairFeed) finish(err error) {
	f.send()
	f.err = err
	close(f.ch)
}

// Next implements engine.BulkSource (reader goroutine).
func (f *pairFeed) Next() ([]byte, []byte, error) {
	for f.rd == nil || f.ri == len(f.rd.ends) {
		if f.rd != nil {
			f.free <- f.rd
			f.rd = nil
		}
		c, ok := <-f.ch
		if !ok {
			if f.err != nil {
				return nil, nil, f.err
			}
			return nil, nil, io.EOF
		}
		f.rd, f.ri = c, 0
	}
	c, i := f.rd, f.ri
	ks := 0
	if i > 0 {
		ks = c.ends[i-1]
	}
	ke, ve := c.ends[i], c.ends[i+1]
	f.ri += 2
	return c.data[ks:ke:ke], c.data[ke:ve:ve], nil
}

// stop tells the parser to stop (BulkLoad returned, maybe early) and
// waits for it to finish.
func (f *pairFeed) stop() {
	close(f.done)
	for range f.ch { // drain until the parser closes ch
	}
}
