package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/marlinkv/marlin/vfs"
)

// Restarts of the soak: clean (Close, Open), a crash at a later file
// operation, and a crash now. A crash image is a CrashClone of the disk:
// the synced data only, or random unsynced 4 KiB chunks kept, zeroed or
// dropped, as in the crash sweep.

// soakInjector counts file operations; armed, it takes a crash image just
// before operation at (from whichever goroutine does it) with the sweep
// model's state at that instant.
type soakInjector struct {
	r     *soakRunner
	mu    sync.Mutex
	n     int64
	at    int64 // -1: not armed
	rnd   *rand.Rand
	crash *soakCrash
}

type soakCrash struct {
	fs   *vfs.MemFS
	snap *swSnap
	what string
}

func (c *soakInjector) MaybeError(op vfs.Op, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.n
	c.n++
	if k == c.at && c.crash == nil {
		c.at = -1
		snap := c.r.m.snap()
		c.crash = &soakCrash{fs: c.r.mem.CrashClone(c.rnd), snap: snap,
			what: fmt.Sprintf("crash before file operation %d (%v %s), %s", k, op, name, imageKind(c.rnd))}
	}
	return nil
}

func imageKind(rnd *rand.Rand) string {
	if rnd == nil {
		return "synced data only"
	}
	return "random unsynced chunks"
}

// arm makes the injector crash at one of the next 300 file operations.
func (c *soakInjector) arm(rnd *rand.Rand) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.n + 1 + int64(rnd.IntN(300))
	c.rnd = nil
	if rnd.IntN(2) == 0 {
		c.rnd = rand.New(rand.NewPCG(rnd.Uint64(), 1))
	}
	c.r.note("crash armed at file operation %d (%s)", c.at, imageKind(c.rnd))
}

// take returns the crash image taken since the last call, if any.
func (c *soakInjector) take() *soakCrash {
	c.mu.Lock()
	defer c.mu.Unlock()
	cr := c.crash
	c.crash = nil
	return cr
}

// disarm cancels an armed crash that has not happened.
func (c *soakInjector) disarm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = -1
}

// addStats adds the counters of the open handle to the totals.
func (r *soakRunner) addStats() {
	st, err := r.db.Stats()
	if err != nil {
		return
	}
	r.noteGen(st)
	r.tot.compactions += st.Compactions
	r.tot.snapshots += st.Snapshots
}

// openDB opens the directory with o. Options the data recorded in the
// directory is incompatible with (a segment size too small for a value
// stored) may be refused with ErrBadOptions; then it opens with the
// segment size of the last open that worked. r.opts is the options used.
func (r *soakRunner) openDB(o *Options) (*DB, error) {
	r.note("open %s", o.soakString())
	db, err := Open(r.dir, o)
	if errors.Is(err, ErrBadOptions) && r.segSize != 0 && o.SegmentSize != r.segSize {
		r.note("refused (%v): open with %d-byte segments", err, r.segSize)
		o.SegmentSize = r.segSize
		o.WriteBufferSize = int(min(int64(o.WriteBufferSize), o.SegmentSize))
		db, err = Open(r.dir, o)
	}
	r.opts = o
	if err == nil {
		r.segSize = o.SegmentSize
	}
	return db, err
}

// open opens the directory with o and checks it against the model, which
// must hold exactly (everything before was acknowledged and closed or
// synced).
func (r *soakRunner) open(o *Options) error {
	db, err := r.openDB(o)
	if err != nil {
		return fmt.Errorf("open (%s): %w", o.soakString(), err)
	}
	r.db = db
	return r.checkExact("after open")
}

// checkExact checks that every key reads as the model says, that the index
// holds one entry per key, and makes the state the sweep model's base.
func (r *soakRunner) checkExact(what string) error {
	s := r.m.snap()
	r.markExpired(s)
	obs, err := soakObserve(r.db, s.keys, s.writes)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, k := range s.keys {
		if w, _ := r.want(k); obs[k] != w {
			return fmt.Errorf("%s: key %s reads %s, want %s", what, k, s.describe(obs[k]), s.describe(w))
		}
	}
	r.m.rebase(obs)
	return nil
}

// cleanRestart closes the DB, verifies the directory and reopens it with o.
func (r *soakRunner) cleanRestart(o *Options) error {
	r.inj.disarm()
	r.note("close")
	r.addStats()
	err := r.db.Close()
	r.db = nil
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	r.m.synced()
	r.tot.clean++
	if r.tot.clean%r.tot.verifyEvery == 0 {
		if err := r.verify("after close"); err != nil {
			return err
		}
	}
	return r.open(o)
}

// verify runs Verify on the closed directory.
func (r *soakRunner) verify(what string) error {
	o := *r.opts
	o.FS = r.mem
	rep, err := Verify(r.dir, &o)
	if err != nil {
		return fmt.Errorf("verify %s: %w", what, err)
	}
	if !rep.OK() {
		return fmt.Errorf("verify %s: %v", what, rep.Problems)
	}
	return nil
}

// killNow crashes at this instant: the process dies with background work
// in flight.
func (r *soakRunner) killNow() error {
	var rnd *rand.Rand
	if r.rnd.IntN(2) == 0 {
		rnd = rand.New(rand.NewPCG(r.rnd.Uint64(), 2))
	}
	c := &soakCrash{snap: r.m.snap(), fs: r.mem.CrashClone(rnd), what: "crash now, " + imageKind(rnd)}
	r.note("%s", c.what)
	return r.crashRestart(c)
}

// crashRestart abandons the running DB and opens the crash image c: its
// state must be one the durability contract allows at the crash. It is
// then closed, verified and opened once more.
func (r *soakRunner) crashRestart(c *soakCrash) error {
	r.inj.disarm()
	r.note("restart from the image of a %s", c.what)
	r.addStats()
	_ = r.db.Close() // the dead process: what it does now reaches no disk
	r.db = nil
	r.mem = c.fs
	r.tot.crashes++
	o := r.drawOpts(false)
	db, err := r.openDB(o)
	if err != nil {
		return fmt.Errorf("open after a %s (%s): %w", c.what, o.soakString(), err)
	}
	r.db = db
	r.markExpired(c.snap)
	obs, err := soakObserve(db, c.snap.keys, c.snap.writes)
	if err == nil {
		err = r.iterateObs(obs)
	}
	if err == nil {
		_, err = c.snap.check(obs)
	}
	for k, w := range obs {
		if err == nil && w >= 0 && r.expired(w) {
			err = fmt.Errorf("key %s reads write %d, which has expired", k, w)
		}
	}
	if err != nil {
		return fmt.Errorf("after a %s: %w", c.what, err)
	}
	r.mu.Lock()
	for k, w := range obs {
		r.cur[k] = w
	}
	r.mu.Unlock()
	r.m.rebase(obs)
	if err := r.recount(); err != nil {
		return fmt.Errorf("after a %s: %w", c.what, err)
	}
	if err := r.cleanRestart(r.drawOpts(false)); err != nil {
		return fmt.Errorf("after a %s: %w", c.what, err)
	}
	return nil
}

// errHung marks a call that never returned.
var errHung = errors.New("the call never returned")

// soakObserve is swObserve for a DB whose background workers run: it reads
// every key (key -> write read, -1 absent; garbage is an error), and
// counts the keys' index entries and the index's length under db.mu, so
// that neither the expirer nor compaction removes one between the two
// (each entry belongs to exactly one key, once).
func soakObserve(db *DB, keys []string, writes []swWrite) (map[string]int, error) {
	db.mu.Lock()
	entries := int64(0)
	for _, k := range keys {
		e, err := db.probeLocked(db.hash([]byte(k)), []byte(k))
		if err != nil {
			db.mu.Unlock()
			return nil, fmt.Errorf("probe %q: %w", k, err)
		}
		if e.found {
			entries++
		}
	}
	n := db.ix.Len()
	db.mu.Unlock()
	if n != entries {
		return nil, fmt.Errorf("the index holds %d entries, the model's keys %d", n, entries)
	}
	obs := make(map[string]int, len(keys))
	for _, k := range keys {
		v, err := db.Get([]byte(k))
		switch {
		case errors.Is(err, ErrNotFound):
			obs[k] = -1
			continue
		case err != nil:
			return nil, fmt.Errorf("get %q: %w", k, err)
		}
		w, err := parseSwVal(k, v)
		if err != nil {
			return nil, err
		}
		if !swWrote(writes, k, w, v) {
			return nil, fmt.Errorf("key %q reads write %d, which never put that value", k, w)
		}
		obs[k] = w
	}
	return obs, nil
}
