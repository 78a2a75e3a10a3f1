package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// opGuard tracks the operations in flight, for two purposes: Close waits
// for all of them, and a segment removed by compaction is unmapped only
// after every operation that might still read it has finished (a grace
// period, as in RCU).
//
// It avoids one shared counter (a cache line bouncing between cores on
// every Get): an operation increments one of several padded stripes, picked
// from its goroutine's stack address. Stripes come in two sets, chosen by
// the parity of a global epoch.
//
// Invariants, with all atomics sequentially consistent:
//   - enter loads the epoch e, increments a stripe of set e&1, then loads
//     the epoch again and retries if it moved. So a registered operation
//     incremented its stripe while the epoch was still e.
//   - synchronize bumps the epoch from e to e+1 and waits until set e&1 is
//     all zero. An operation that registered under e is waited for. One
//     that registers under e+1 (or retried into it) did its increment after
//     the bump, hence after everything the caller did before synchronize
//     (such as removing a segment from db.segs), so it cannot see the old
//     state.
//   - synchronize calls are serialized, so set e&1 holds no stragglers of
//     epoch e-2: they were drained by the previous call.
type opGuard struct {
	closed  atomic.Bool
	epoch   atomic.Uint64
	syncMu  sync.Mutex // serializes synchronize
	stripes [2][16]struct {
		n atomic.Int64
		_ [56]byte
	}
}

// token identifies the stripe an operation registered in.
type token struct{ set, i int }

// enter registers an operation; ok is false if the DB is closed.
func (g *opGuard) enter() (t token, ok bool) {
	var probe byte
	t.i = int(uintptr(unsafe.Pointer(&probe))>>13) % len(g.stripes[0])
	for {
		e := g.epoch.Load()
		t.set = int(e & 1)
		g.stripes[t.set][t.i].n.Add(1)
		if g.epoch.Load() == e {
			break
		}
		g.stripes[t.set][t.i].n.Add(-1)
	}
	if g.closed.Load() {
		g.exit(t)
		return t, false
	}
	return t, true
}

func (g *opGuard) exit(t token) { g.stripes[t.set][t.i].n.Add(-1) }

// pin registers work that must hold off synchronize (and close) even after
// the DB started closing: the group-commit flusher's fsync, which writers
// inside their own operation wait for, so it must not be refused by close.
// Release it with exit.
func (g *opGuard) pin() token {
	var probe byte
	t := token{i: int(uintptr(unsafe.Pointer(&probe))>>13) % len(g.stripes[0])}
	for {
		e := g.epoch.Load()
		t.set = int(e & 1)
		g.stripes[t.set][t.i].n.Add(1)
		if g.epoch.Load() == e {
			return t
		}
		g.stripes[t.set][t.i].n.Add(-1)
	}
}

// synchronize waits until every operation that was in flight when it was
// called has finished. The caller must not be inside an operation.
func (g *opGuard) synchronize() {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	e := g.epoch.Add(1) - 1
	waitZero(func() bool { return g.setBusy(int(e & 1)) })
}

// close sets the flag and waits for operations in flight. It reports
// whether this call was the one that closed.
func (g *opGuard) close() bool {
	if g.closed.Swap(true) {
		return false
	}
	waitZero(func() bool { return g.setBusy(0) || g.setBusy(1) })
	return true
}

func (g *opGuard) setBusy(set int) bool {
	for i := range g.stripes[set] {
		if g.stripes[set][i].n.Load() != 0 {
			return true
		}
	}
	return false
}

func waitZero(busy func() bool) {
	for spins := 0; busy(); spins++ {
		if spins < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
}
