package engine

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// The soak's concurrent steps: a second goroutine writes (rolling
// segments) while the test's goroutine takes a checkpoint or snapshots.

// startWriter starts a goroutine writing units (with large values, so
// segments roll) until stop is closed; its error arrives on the channel.
func (r *soakRunner) startWriter(seed uint64, big bool) (chan struct{}, chan error) {
	stop := make(chan struct{})
	errc := make(chan error, 1)
	rnd := rand.New(rand.NewPCG(seed, 3))
	db := r.db
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				r.note("the concurrent writer stops after %d units", n)
				errc <- nil
				return
			default:
			}
			batch := rnd.IntN(4) == 0
			ops := []soakOp{r.randOp(rnd, batch)}
			if batch {
				ops = append(ops, r.randOp(rnd, true), r.randOp(rnd, true))
			} else if big && rnd.IntN(2) == 0 && !ops[0].w.del {
				ops[0].w.size = 600 + rnd.IntN(1000)
			}
			if err := r.apply(db, ops, batch); err != nil {
				errc <- fmt.Errorf("concurrent writer, unit %d of it: %w", n, err)
				return
			}
			n++
			if n%64 == 0 {
				time.Sleep(100 * time.Microsecond) // let the other goroutine in
			}
		}
	}()
	return stop, errc
}

// checkpoint takes a checkpoint (with a second goroutine writing, once
// item 12 is fixed), opens it read-only and checks that it holds a cut of
// the history: every write acknowledged before Checkpoint was called,
// nothing started after it returned, batches whole.
func (r *soakRunner) checkpoint() error {
	r.tot.checkpoints++
	dir := fmt.Sprintf("/ckpt%d", r.tot.checkpoints)
	concurrent := r.gate(12)
	r.note("checkpoint %s (during writes: %v)", dir, concurrent)
	var stop chan struct{}
	var werr chan error
	if concurrent {
		stop, werr = r.startWriter(r.rnd.Uint64(), true)
		time.Sleep(time.Duration(r.rnd.IntN(3)) * time.Millisecond)
	}
	before := r.m.snap()
	err := r.db.Checkpoint(dir)
	after := r.m.snap()
	if concurrent {
		close(stop)
		if werr := <-werr; werr != nil {
			return werr
		}
	}
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	for i := range after.units {
		after.units[i].durable = i < len(before.units) && before.units[i].status == swOK
	}
	r.markExpired(after)
	o := *r.opts
	o.FS, o.ReadOnly = r.mem, true
	db, err := Open(dir, &o)
	if err != nil {
		return fmt.Errorf("open checkpoint %s: %w", dir, err)
	}
	obs, err := swObserve(db, after.keys, after.writes, true)
	if err == nil {
		_, err = after.check(obs)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		rep, verr := Verify(dir, &o)
		switch {
		case verr != nil:
			err = verr
		case !rep.OK():
			err = fmt.Errorf("verify: %v", rep.Problems)
		}
	}
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return r.removeDir(dir)
}

func (r *soakRunner) removeDir(dir string) error {
	names, err := r.mem.List(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := r.mem.Remove(dir + "/" + n); err != nil {
			return err
		}
	}
	return r.mem.Remove(dir)
}

// snapshotsDuringWrites writes index snapshots while a second goroutine
// writes and rolls segments (item 12), then, half of the time, crashes at
// once, so that the next open starts from such a snapshot.
func (r *soakRunner) snapshotsDuringWrites() error {
	if !r.gate(12) {
		return nil
	}
	n := 1 + r.rnd.IntN(4)
	r.note("%d snapshots during writes", n)
	stop, werr := r.startWriter(r.rnd.Uint64(), true)
	var err error
	for range n {
		if err = r.db.Snapshot(); err != nil {
			break
		}
	}
	close(stop)
	if e := <-werr; e != nil {
		return e
	}
	if err != nil {
		return fmt.Errorf("snapshot during writes: %w", err)
	}
	if r.rnd.IntN(2) == 0 {
		return r.killNow()
	}
	return nil
}
