package engine

import (
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// opGuard lets Close wait for the operations in flight without making every
// operation bump one shared counter (a cache line bouncing between cores on
// every Get). An operation increments one of several padded stripes, picked
// from its goroutine's stack address, then checks the closed flag; Close sets
// the flag, then waits for every stripe to reach zero. Both sides use
// sequentially consistent atomics, so either the operation sees the flag or
// Close sees the operation.
type opGuard struct {
	closed  atomic.Bool
	stripes [16]struct {
		n atomic.Int64
		_ [56]byte
	}
}

// enter registers an operation. It returns the stripe to pass to exit, or
// false if the DB is closed.
func (g *opGuard) enter() (int, bool) {
	var probe byte
	i := int(uintptr(unsafe.Pointer(&probe))>>13) % len(g.stripes)
	g.stripes[i].n.Add(1)
	if g.closed.Load() {
		g.stripes[i].n.Add(-1)
		return 0, false
	}
	return i, true
}

func (g *opGuard) exit(i int) { g.stripes[i].n.Add(-1) }

// close sets the flag and waits for operations in flight. It reports
// whether this call was the one that closed.
func (g *opGuard) close() bool {
	if g.closed.Swap(true) {
		return false
	}
	for spins := 0; g.busy(); spins++ {
		if spins < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return true
}

func (g *opGuard) busy() bool {
	for i := range g.stripes {
		if g.stripes[i].n.Load() != 0 {
			return true
		}
	}
	return false
}
