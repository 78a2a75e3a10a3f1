package bench

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Operation kinds, one latency histogram each.
const (
	opRead   = iota // a get that found its key
	opMiss          // a get that found nothing
	opUpdate        // a put of an existing id
	opInsert        // a put of a new id
	opDelete        // a delete
	opRMW           // a get and a put of the same key
	opScan          // a full scan
	opBatch         // a batch of the load phase
	numOps
)

var opNames = [numOps]string{"read", "miss", "update", "insert", "delete", "rmw", "scan", "batch"}

// expect is what a read must find.
type expect int

const (
	mustHit  expect = iota // the key is present: a value of its own
	mustMiss               // the key is absent
	mayMiss                // either (an insert may still be in flight)
)

// worker is one client goroutine. Its histograms and counter are its own,
// so clients share no cache lines while they run.
type worker struct {
	r       *runner
	id      int
	rnd     *rand.Rand
	hists   [numOps]*Histogram
	key     []byte
	val     []byte
	buf     []byte
	version uint64
	_       [64]byte
	done    atomic.Int64 // operations completed in this phase
	_       [56]byte
}

func (r *runner) newWorker(i int) *worker {
	return &worker{r: r, id: i, rnd: rand.New(rand.NewPCG(r.cfg.Seed, uint64(i)+1))}
}

func (w *worker) record(kind int, d time.Duration) {
	if w.hists[kind] == nil {
		w.hists[kind] = NewHistogram()
	}
	w.hists[kind].Record(d)
}

func (w *worker) valueSize() int {
	c := &w.r.cfg
	if c.ValueMax == c.ValueMin {
		return c.ValueMin
	}
	return c.ValueMin + w.rnd.IntN(c.ValueMax-c.ValueMin+1)
}

// nextVersion returns a version no other worker uses.
func (w *worker) nextVersion() uint64 {
	w.version++
	return uint64(w.id+1)<<40 | w.version
}

// readPercent is the share of reads in the YCSB workloads.
var readPercent = map[string]int{"a": 50, "b": 95, "c": 100, "d": 95, "f": 50}

// op performs one operation of the workload.
func (w *worker) op(dist Distribution) error {
	r, c := w.r, &w.r.cfg
	switch c.Workload {
	case "a", "b", "c", "f":
		id := dist.Next(w.rnd)
		if w.rnd.IntN(100) < readPercent[c.Workload] {
			return w.read(id, mustHit)
		}
		if c.Workload == "f" {
			return w.rmw(id)
		}
		return w.write(opUpdate, id)
	case "d":
		if w.rnd.IntN(100) < readPercent["d"] {
			id := dist.Next(w.rnd)
			if id >= c.Keys {
				return w.read(id, mayMiss) // its insert may not have completed
			}
			return w.read(id, mustHit)
		}
		return w.write(opInsert, r.inserted.Add(1)-1)
	case "miss":
		return w.read(c.Keys+w.rnd.Uint64N(1<<40), mustMiss)
	case "iterate":
		return w.scan()
	case "mixed":
		return w.mixed(dist)
	}
	return nil
}

// mixed performs one get, put or delete with the weights of Mix. When the
// mix deletes, operations on an id are serialized by a striped lock and
// the deleted ids tracked, so every get knows whether it must find its key.
// (The lock is taken outside the timed section.)
func (w *worker) mixed(dist Distribution) error {
	m := w.r.cfg.Mix
	x := w.rnd.IntN(m.Get + m.Put + m.Delete)
	id := dist.Next(w.rnd)
	t := w.r.track
	if t != nil {
		mu := t.lock(id)
		mu.Lock()
		defer mu.Unlock()
	}
	switch {
	case x < m.Get:
		if t != nil && t.deleted(id) {
			return w.read(id, mustMiss)
		}
		return w.read(id, mustHit)
	case x < m.Get+m.Put:
		if err := w.write(opUpdate, id); err != nil {
			return err
		}
		if t != nil {
			t.set(id, false)
		}
		return nil
	}
	w.key = Key(w.key, id, w.r.cfg.keySize(id))
	start := time.Now()
	if err := w.r.db.Delete(w.key); err != nil {
		return err
	}
	w.record(opDelete, time.Since(start))
	w.done.Add(1)
	t.set(id, true)
	return nil
}

// read gets id and checks the answer against exp.
func (w *worker) read(id uint64, exp expect) error {
	r := w.r
	w.key = Key(w.key, id, r.cfg.keySize(id))
	start := time.Now()
	var err error
	w.buf, err = r.db.AppendValue(w.buf[:0], w.key)
	d := time.Since(start)
	w.done.Add(1)
	switch {
	case errors.Is(err, engine.ErrNotFound):
		w.record(opMiss, d)
		if exp == mustHit {
			r.wrong("read %d: not found", id)
		}
	case err != nil:
		return err
	default:
		w.record(opRead, d)
		if exp == mustMiss {
			r.wrong("read %d: found a value for an absent key", id)
		} else if !CheckValue(w.buf, id) {
			r.wrong("read %d: the value is not one written for this key", id)
		}
	}
	return nil
}

// write puts a new version of id.
func (w *worker) write(kind int, id uint64) error {
	r := w.r
	w.key = Key(w.key, id, r.cfg.keySize(id))
	w.val = Value(w.val, id, w.nextVersion(), w.valueSize())
	start := time.Now()
	if err := r.db.Put(w.key, w.val); err != nil {
		return err
	}
	w.record(kind, time.Since(start))
	w.done.Add(1)
	return nil
}

// rmw reads id, checks the value and writes a new version.
func (w *worker) rmw(id uint64) error {
	r := w.r
	w.key = Key(w.key, id, r.cfg.keySize(id))
	w.val = Value(w.val, id, w.nextVersion(), w.valueSize())
	start := time.Now()
	var err error
	w.buf, err = r.db.AppendValue(w.buf[:0], w.key)
	if err == nil {
		err = r.db.Put(w.key, w.val)
	}
	d := time.Since(start)
	switch {
	case errors.Is(err, engine.ErrNotFound):
		r.wrong("rmw %d: not found", id)
		return nil
	case err != nil:
		return err
	case !CheckValue(w.buf, id):
		r.wrong("rmw %d: the value is not one written for this key", id)
	}
	w.record(opRMW, d)
	w.done.Add(1)
	return nil
}

// scan visits every pair and checks their number (Verify checks each
// pair; here the scan is timed, so it only counts).
func (w *worker) scan() error {
	r := w.r
	start := time.Now()
	var n int64
	err := r.db.ForEach(func(k, v []byte) error {
		n++
		return nil
	})
	if err != nil {
		return err
	}
	w.record(opScan, time.Since(start))
	w.done.Add(n)
	if want := int64(r.inserted.Load()); n != want {
		r.wrong("scan: %d pairs, want %d", n, want)
	}
	return nil
}
