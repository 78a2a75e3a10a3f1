package engine

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestCrashSweep crashes the sweep workload (sweep_model_test.go) at every
// file operation: an injector counts the operations and, before operation
// k executes, takes CrashClone copies of the in-memory filesystem (the disk
// after a power loss at that instant: synced data kept, unsynced 4 KiB
// chunks kept, zeroed or dropped at random, unsynced directory operations
// forgotten), one with only the synced data and others at random, while the
// workload waits. Each copy is then opened and checked:
//
//   - every write acknowledged as durable before operation k reads back its
//     latest value, and the state is exactly the one after some prefix of
//     the writes (so nothing older than an acknowledged write, no batch in
//     part, no garbage);
//   - reopening it again gives the same state, and a write made after the
//     crash survives the reopen;
//   - Verify finds nothing wrong once it has been opened and closed.
//
// The workload does puts, deletes, TTL puts, batches, Syncs, Snapshots,
// Compacts and restarts on 8 KiB segments. By default every operation of
// one workload per sync mode is a crash point, with one copy per point
// (alternately the synced data only and a random one), and the slow checks
// (a walk of every pair, Verify) at every 8th point; MARLIN_CRASH_SWEEP=long
// (make crash) runs longer workloads, more seeds, three copies per point
// and every check everywhere.
func TestCrashSweep(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	p := crashParams{steps: 80, seeds: 1, images: 1, fullEvery: 8, nestedEvery: 4}
	if testing.Short() {
		p.steps = 40
	} else if raceEnabled {
		// make test also runs this sweep without the race detector, at
		// the full length; under it, a shorter workload.
		p.steps, p.fullEvery = 48, 12
	}
	if swEnvLong() {
		p = crashParams{steps: 400, seeds: 4, images: 3, fullEvery: 1, nestedEvery: 1}
	}
	points, images, nested := 0, 0, 0
	for _, sm := range []SyncMode{SyncGroup, SyncAlways, SyncPeriodic, SyncNone} {
		for seed := range uint64(p.seeds) {
			t.Run(fmt.Sprintf("%v/seed=%d", sm, seed), func(t *testing.T) {
				n, m, k := crashSweep(t, swConfig{sync: sm, seed: seed, steps: p.steps}, p)
				points += n
				images += m
				nested += k
			})
		}
	}
	t.Logf("crash sweep: %d crash points explored, %d crash images opened and checked, %d second crashes during their recovery",
		points, images, nested)
}

type crashParams struct {
	steps, seeds int
	images       int // crash copies per point
	fullEvery    int // walk every pair and Verify at every fullEvery-th point
	nestedEvery  int // crash the recovery too at every nestedEvery-th point
}

// crashInjector calls at before every operation; it never fails one.
type crashInjector struct {
	n  atomic.Int64
	at func(k int64, op vfs.Op, name string)
}

func (c *crashInjector) MaybeError(op vfs.Op, name string) error {
	c.at(c.n.Add(1)-1, op, name)
	return nil
}

type crashPoint struct {
	k      int64
	op     vfs.Op
	name   string
	clones []*vfs.MemFS
	snap   *swSnap
}

// crashSweep runs one workload, checking a crash at each of its operations,
// and returns the number of crash points, of images checked, and of second
// crashes during a recovery.
func crashSweep(t *testing.T, cfg swConfig, p crashParams) (int, int, int) {
	mem := vfs.NewMem()
	points := make(chan crashPoint)
	abort := make(chan struct{})
	defer close(abort)
	var r *swRunner
	inj := &crashInjector{at: func(k int64, op vfs.Op, name string) {
		cp := crashPoint{k: k, op: op, name: name, snap: r.m.snap()}
		for s := range p.images {
			// Copy 0 keeps exactly the synced data, except with a single copy
			// per point, which alternates.
			var rnd *rand.Rand
			if s > 0 || p.images == 1 && k%2 == 1 {
				rnd = rand.New(rand.NewPCG(cfg.seed, uint64(k)<<8|uint64(s)))
			}
			cp.clones = append(cp.clones, mem.CrashClone(rnd))
		}
		select {
		case points <- cp:
		case <-abort:
		}
	}}
	r = newSwRunner(cfg, vfs.NewErrorFS(mem, inj))
	done := make(chan error, 1)
	go func() {
		done <- r.run()
		close(points)
	}()
	start := time.Now()
	n, m, nests := 0, 0, 0
	for cp := range points {
		n++
		for i, c := range cp.clones {
			m++
			full := cp.k%int64(p.fullEvery) == 0
			var nested *rand.Rand
			if cp.k%int64(p.nestedEvery) == 1%int64(p.nestedEvery) {
				nested = rand.New(rand.NewPCG(cfg.seed, uint64(cp.k)<<8|uint64(i)|1<<7))
			}
			nests += checkCrashImage(t, cfg, c, cp.snap, full, nested, fmt.Sprintf("%v seed %d: crash before op %d (%v %s), copy %d",
				cfg.sync, cfg.seed, cp.k, cp.op, cp.name, i))
		}
	}
	require.NoError(t, <-done)
	require.Empty(t, r.errs, "the crash sweep injects no errors")
	t.Logf("%v seed %d: %d crash points (%d with a second crash during recovery) in %v; workload: %s",
		cfg.sync, cfg.seed, n, nests, time.Since(start), r.summary())
	return n, m, nests
}

// checkCrashImage opens a crash image and checks it against the model
// snapshot taken at the crash; full adds a walk of every pair and Verify.
// With nested, a second power loss strikes at a random operation of the
// first recovery (its Open, a write and Close), and that image must pass
// the same check: recovery itself is crash-safe (a torn tail truncated,
// then appended to, then torn again).
// It returns the number of second crashes (0 or 1).
func checkCrashImage(t *testing.T, cfg swConfig, fs *vfs.MemFS, s *swSnap, full bool, nested *rand.Rand, what string) int {
	t.Helper()
	o := swOpts(fs, cfg.sync)
	var second *vfs.MemFS
	if nested != nil {
		at := int64(nested.IntN(48))
		o.FS = vfs.NewErrorFS(fs, &crashInjector{at: func(k int64, _ vfs.Op, _ string) {
			if k == at {
				second = fs.CrashClone(nested)
			}
		}})
	}
	db, err := Open("/db", o)
	require.NoError(t, err, "%s: open", what)
	obs, err := swObserve(db, s.keys, s.writes, full)
	require.NoError(t, err, "%s", what)
	_, err = s.check(obs)
	require.NoError(t, err, "%s", what)
	require.NoError(t, db.Put([]byte(swAfterKey), []byte("x")), "%s: write after the crash", what)
	require.NoError(t, db.Close(), "%s: close", what)
	o.FS = fs

	db, err = Open("/db", o)
	require.NoError(t, err, "%s: second open", what)
	obs2, err := swObserve(db, s.keys, s.writes, false)
	require.NoError(t, err, "%s: second open", what)
	require.NoError(t, s.sameState(obs, obs2), "%s: the second open differs", what)
	v, err := db.Get([]byte(swAfterKey))
	require.NoError(t, err, "%s: the write after the crash", what)
	require.Equal(t, "x", string(v))
	require.NoError(t, db.Close(), "%s: second close", what)
	if full {
		rep, err := Verify("/db", o)
		require.NoError(t, err, "%s: verify", what)
		require.True(t, rep.OK(), "%s: verify: %v", what, rep.Problems)
	}
	if second == nil {
		return 0
	}
	what += ", then a crash during its recovery"
	o.FS = second
	db, err = Open("/db", o)
	require.NoError(t, err, "%s: open", what)
	obs, err = swObserve(db, s.keys, s.writes, false)
	require.NoError(t, err, "%s", what)
	_, err = s.check(obs)
	require.NoError(t, err, "%s", what)
	require.NoError(t, db.Close(), "%s: close", what)
	return 1
}
