package bench

import (
	"bytes"
	"math/bits"
	"sync"
	"sync/atomic"
)

// presence tracks which ids the mixed workload deleted, with striped locks
// that serialize the operations on one id so a read knows what it must
// find.
type presence struct {
	locks [1024]sync.Mutex
	bits  []atomic.Uint64 // bit set: deleted
}

func newPresence(n uint64) *presence {
	p := &presence{bits: make([]atomic.Uint64, (n+63)/64)}
	for i := range p.bits {
		p.bits[i].Store(0) // touch the pages now
	}
	return p
}

func (p *presence) lock(id uint64) *sync.Mutex { return &p.locks[id%uint64(len(p.locks))] }

func (p *presence) deleted(id uint64) bool {
	return p.bits[id/64].Load()&(1<<(id%64)) != 0
}

func (p *presence) set(id uint64, deleted bool) {
	if deleted {
		p.bits[id/64].Or(1 << (id % 64))
	} else {
		p.bits[id/64].And(^(1 << (id % 64)))
	}
}

// count returns the number of deleted ids.
func (p *presence) count() int64 {
	var n int
	for i := range p.bits {
		n += bits.OnesCount64(p.bits[i].Load())
	}
	return int64(n)
}

// expectedKeys is the number of records the DB must hold after the run.
func (r *runner) expectedKeys() int64 {
	n := int64(r.inserted.Load())
	if r.track != nil {
		n -= r.track.count()
	}
	return n
}

// verify reads every id ever inserted back from the (reopened) DB and
// checks it is present with a value of its own, or absent if the run
// deleted it; then it scans the DB and checks that every pair is one of
// those records and that there are no others. Wrong answers are counted
// as errors.
func (r *runner) verify() error {
	n := r.inserted.Load()
	g := uint64(r.cfg.Goroutines)
	err := r.phase("verify", int64(n), func(w *worker) error {
		for id := n * uint64(w.id) / g; id < n*uint64(w.id+1)/g; id++ {
			exp := mustHit
			if r.track != nil && r.track.deleted(id) {
				exp = mustMiss
			}
			if err := w.read(id, exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var pairs int64
	var key []byte
	err = r.db.ForEach(func(k, v []byte) error {
		pairs++
		if len(k) < 8 {
			r.wrong("scan: short key %x", k)
			return nil
		}
		id := IDOfKey(k)
		key = Key(key, id, r.cfg.keySize(id))
		switch {
		case id >= n || !bytes.Equal(k, key):
			r.wrong("scan: key %x was never written", k)
		case r.track != nil && r.track.deleted(id):
			r.wrong("scan: deleted record %d is present", id)
		case !CheckValue(v, id):
			r.wrong("scan: record %d: the value is not one written for this key", id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if want := r.expectedKeys(); pairs != want {
		r.wrong("scan: %d pairs, want %d", pairs, want)
	}
	return nil
}
