package server

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/marlinkv/marlin/engine"
)

// The sweep removes what flush_all hid. flush_all itself is one write
// (flush.go); the flushed items stay in the engine, costing index memory
// and disk, until a client writes their key again or this background walk
// deletes them: one pass over the log in order (engine.Iterator, large
// sequential reads), deleting each record older than the flush threshold
// with an Update that checks it again under the write lock, so an item
// stored after the flush is never touched. A flush during a sweep starts
// it over (the walk may have passed items the new flush hides). When a
// pass ends, the threshold it served is stored as swept, so a restart
// resumes an unfinished sweep and not a finished one.
//
// left counts the flushed items still stored, for curr_items: set at
// flush_all to the number of keys then, decreased as the sweep or a
// client's write removes one, zero when a pass ends. After a restart in
// the middle of a sweep the count is unknown and kept at zero (curr_items
// counts the remaining flushed items until the sweep ends).
type sweeper struct {
	left atomic.Int64

	// mu guards the rest: the running pass's cancel channel and done
	// signal, and whether a new pass must follow it.
	mu      sync.Mutex
	running bool
	again   bool
	cancel  chan struct{}
	done    chan struct{}
	stopped bool
}

// sweepBatch is how many flushed keys a pass collects before deleting
// them: the walk's position stays valid, and the deletes go in a burst
// that leaves the write lock free between keys.
const sweepBatch = 256

// start begins a pass (or asks the running one to start over) for the
// current threshold; flushed, if not negative, is the new count of
// flushed items.
func (w *sweeper) start(s *Server, flushed int64) {
	if flushed >= 0 {
		w.left.Store(flushed)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.running {
		w.again = true
		return
	}
	w.running = true
	w.cancel, w.done = make(chan struct{}), make(chan struct{})
	go w.run(s, w.cancel, w.done)
}

// stop ends the running pass and waits for it (Shutdown); no pass
// starts after it.
func (w *sweeper) stop() {
	w.mu.Lock()
	w.stopped = true
	running, cancel, done := w.running, w.cancel, w.done
	w.mu.Unlock()
	if running {
		close(cancel)
		<-done
	}
}

// removed notes that a flushed item was removed (never below zero).
func (w *sweeper) removed() {
	for {
		n := w.left.Load()
		if n <= 0 || w.left.CompareAndSwap(n, n-1) {
			return
		}
	}
}

func (w *sweeper) run(s *Server, cancel, done chan struct{}) {
	defer close(done)
	for {
		threshold := s.flushThreshold.Load()
		err := w.pass(s, threshold, cancel)
		if err == nil {
			err = s.markSwept(threshold)
		}
		w.mu.Lock()
		if err == nil && !w.again && s.flushThreshold.Load() == threshold {
			w.left.Store(0)
		}
		if errors.Is(err, errSweepCancelled) || errors.Is(err, engine.ErrClosed) || !w.again {
			w.running = false
			w.mu.Unlock()
			if err != nil && !errors.Is(err, errSweepCancelled) && !errors.Is(err, engine.ErrClosed) {
				s.log.Error("marlin serve: sweeping flushed items failed (retried at the next flush_all or restart)", "err", err)
			}
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}

var errSweepCancelled = errors.New("sweep cancelled")

// pass walks the log once and deletes every record older than threshold.
func (w *sweeper) pass(s *Server, threshold uint64, cancel chan struct{}) error {
	it := s.db.NewIterator()
	defer it.Close()
	var keys [][]byte
	var buf []byte
	flushBatch := func() error {
		for _, k := range keys {
			select {
			case <-cancel:
				return errSweepCancelled
			default:
			}
			removed := false
			_, err := s.db.Update(k, func(_ []byte, it engine.Item, found bool, _ uint64) (engine.Change, error) {
				if !found || it.Seq >= threshold {
					return engine.Change{Op: engine.Keep}, nil
				}
				removed = true
				return engine.Change{Op: engine.Remove}, nil
			})
			if err != nil {
				return err
			}
			if removed {
				w.removed()
			}
		}
		keys, buf = keys[:0], buf[:0]
		return nil
	}
	for it.Next() {
		if it.Item().Seq >= threshold || bytes.Equal(it.Key(), flushKey) {
			continue
		}
		// The iterator's key is valid until Next: keep a copy. (A key
		// kept from before buf grew still points into the old array,
		// which holds the same bytes.)
		start := len(buf)
		buf = append(buf, it.Key()...)
		keys = append(keys, buf[start:len(buf):len(buf)])
		if len(keys) == sweepBatch {
			if err := flushBatch(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	return flushBatch()
}

// markSwept stores that every record older than threshold is gone.
func (s *Server) markSwept(threshold uint64) error {
	_, err := s.db.Update(flushKey, func(v []byte, _ engine.Item, found bool, _ uint64) (engine.Change, error) {
		if !found {
			return engine.Change{Op: engine.Keep}, nil
		}
		f, err := decodeFlush(v)
		if err != nil {
			return engine.Change{}, err
		}
		if f.swept >= threshold {
			return engine.Change{Op: engine.Keep}, nil
		}
		f.swept = threshold
		return engine.Change{Op: engine.Set, Value: f.encode()}, nil
	})
	return err
}
