package engine

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// The soak's checks: byte accounting recounted from the log, full
// iteration, View with nested reads, and the quiet check.

// soakRecount recounts, with compaction and writers held off, the bytes of
// the records the index points at in each segment and compares them with
// the segment's live figure; and checks that the segment's figures (live,
// dead, and any other int64 counter whose name mentions tombstones) add up
// to its record bytes.
func soakRecount(db *DB) error {
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	live := map[uint16]int64{}
	var locs []uint64
	for sn := range index.NumShards {
		locs = db.ix.ShardLocations(sn, locs[:0])
		for _, loc := range locs {
			r, locked, err := db.recordAt(loc)
			if err != nil {
				return fmt.Errorf("recount: index entry %#x (shard %d): %w", loc, sn, err)
			}
			size := int64(segment.Size(len(r.Key), len(r.Value), r.Expiry != 0))
			if locked {
				db.tailMu.RUnlock()
			}
			id, _ := segment.SplitLoc(loc)
			live[id] += size
		}
	}
	tail := db.tail.n.Load()
	var errs []string
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil {
			continue
		}
		id := uint16(i)
		records := sf.flushed.Load() - segment.HeaderSize
		if sf == db.active {
			records += tail
		}
		l, d := sf.live.Load(), sf.dead.Load()
		if l != live[id] {
			errs = append(errs, fmt.Sprintf("segment %d (gen %d): live bytes %d, the index points at %d", id, sf.gen, l, live[id]))
		}
		if l+d != records {
			if extra, names := segExtraBytes(sf); len(names) == 0 || l+d+extra != records {
				errs = append(errs, fmt.Sprintf("segment %d (gen %d): live %d + dead %d (+ %v %d) != record bytes %d",
					id, sf.gen, l, d, names, extra, records))
			}
		}
		delete(live, id)
	}
	for id, n := range live {
		errs = append(errs, fmt.Sprintf("index entries (%d bytes) point at segment id %d, which is not open", n, id))
	}
	if len(errs) > 0 {
		return fmt.Errorf("recount: %s", strings.Join(errs, "; "))
	}
	return nil
}

// segExtraBytes sums the int64 counters of sf (other than live and dead)
// whose names mention tombstones: an accounting of copied tombstones that
// a fix may add beside live and dead.
func segExtraBytes(sf *segFile) (int64, []string) {
	v := reflect.ValueOf(sf).Elem()
	var sum int64
	var names []string
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !strings.Contains(strings.ToLower(f.Name), "tomb") {
			continue
		}
		p := unsafe.Pointer(v.Field(i).UnsafeAddr())
		switch f.Type {
		case reflect.TypeOf(atomic.Int64{}):
			sum += (*atomic.Int64)(p).Load()
		case reflect.TypeOf(int64(0)):
			sum += *(*int64)(p)
		default:
			continue
		}
		names = append(names, f.Name)
	}
	return sum, names
}

func (r *soakRunner) recount() error {
	if err := soakRecount(r.db); err != nil {
		return err
	}
	r.db.mu.Lock()
	counted, kept := r.db.countFreeIDsLocked(), r.db.freeIDsLocked()
	r.db.mu.Unlock()
	if counted != kept {
		return fmt.Errorf("free segment ids: %d counted, %d kept", counted, kept)
	}
	st, err := r.db.Stats()
	if err != nil {
		return err
	}
	r.noteGen(st)
	return nil
}

// iterate checks ForEach and an Iterator against the model: every live
// key once, with its value, and nothing else.
func (r *soakRunner) iterate() error {
	r.note("iterate")
	return r.iterateWith(func(how, k string, ok bool, v []byte) error { return r.checkRead(how, k, ok, v) })
}

// iterateObs checks ForEach and an Iterator against Gets (obs).
func (r *soakRunner) iterateObs(obs map[string]int) error {
	return r.iterateWith(func(how, k string, ok bool, v []byte) error {
		switch w := obs[k]; {
		case ok != (w >= 0):
			return fmt.Errorf("%s: key %s present %v, but Get reads write %d", how, k, ok, w)
		case ok:
			if got, err := parseSwVal(k, v); err != nil || got != w {
				return fmt.Errorf("%s: key %s reads write %d (%v), Get write %d", how, k, got, err, w)
			}
		}
		return nil
	})
}

func (r *soakRunner) iterateWith(check func(how, k string, ok bool, v []byte) error) error {
	for _, how := range []string{"ForEach", "Iterator"} {
		got := map[string][]byte{}
		add := func(k, v []byte) error {
			if _, dup := got[string(k)]; dup {
				return fmt.Errorf("%s yielded key %s twice", how, k)
			}
			got[string(k)] = bytes.Clone(v)
			return nil
		}
		var err error
		if how == "ForEach" {
			err = r.db.ForEach(add)
		} else {
			it := r.db.NewIterator()
			for err == nil && it.Next() {
				err = add(it.Key(), it.Value())
			}
			err = errors.Join(err, it.Err(), it.Close())
		}
		if err != nil {
			return fmt.Errorf("%s: %w", how, err)
		}
		for _, k := range r.m.keys {
			v, ok := got[k]
			if err := check(how, k, ok, v); err != nil {
				return err
			}
			delete(got, k)
		}
		for k := range got {
			return fmt.Errorf("%s yielded key %q, which was never written", how, k)
		}
	}
	return nil
}

// soakHang is how long a call may take before the soak calls it hung.
const soakHang = 30 * time.Second

// within runs fn, failing if it does not return within soakHang.
func (r *soakRunner) within(what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(soakHang):
		r.hung = true
		return fmt.Errorf("%s: %w within %v", what, errHung, soakHang)
	}
}

// view reads a key with View; with item 5's fix, the callback reads two
// other keys (Get, Has) while a second goroutine writes, which makes the
// write buffer flush under the callback.
func (r *soakRunner) view() error {
	k, k2, k3 := r.key(r.rnd), r.key(r.rnd), r.key(r.rnd)
	nested := r.gate(5)
	r.note("view %s (nested get %s, has %s: %v)", k, k2, k3, nested)
	var stop chan struct{}
	var werr chan error
	if nested {
		stop, werr = r.startWriter(r.rnd.Uint64(), false)
	}
	var val []byte
	called := false
	err := r.within("View", func() error {
		return r.db.View([]byte(k), func(v []byte) error {
			called = true
			val = bytes.Clone(v)
			if !nested {
				return nil
			}
			time.Sleep(time.Millisecond) // a slow callback: writers must not wait for it
			if _, err := r.db.Get([]byte(k2)); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("nested get %s: %w", k2, err)
			}
			if _, err := r.db.Has([]byte(k3)); err != nil {
				return fmt.Errorf("nested has %s: %w", k3, err)
			}
			return nil
		})
	})
	if errors.Is(err, errHung) {
		return err
	}
	if nested {
		close(stop)
		if werr := <-werr; werr != nil {
			return werr
		}
		// The writer changed keys under the callback: only the value's
		// integrity can be judged, and the model now.
		if err == nil {
			if _, perr := parseSwVal(k, val); perr != nil {
				return fmt.Errorf("view %s: %w", k, perr)
			}
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("view %s: %w", k, err)
		}
		return r.get(k)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("view %s: %w", k, err)
	}
	if err == nil != called {
		return fmt.Errorf("view %s: returned %v, callback called %v", k, err, called)
	}
	return r.checkRead("view", k, err == nil, val)
}

// quietCheck reopens with the background workers on short intervals, lets
// hours pass on the fake clock without a write, and waits for the workers
// to go quiet: BytesWritten and Snapshots unchanged over a window. They
// must settle within a generous bound (item 3).
func (r *soakRunner) quietCheck() error {
	if !r.gate(3) {
		return nil
	}
	r.tot.quiet++
	if err := r.cleanRestart(r.drawOpts(true)); err != nil {
		return err
	}
	r.clk.Advance(3 * time.Hour)
	r.note("idle, 3 simulated hours later")
	// As a segment roll does at the end of a load: the compactor runs at
	// once, not at its next tick.
	r.db.kickCompactor()
	window, bound := 1500*time.Millisecond, 30*time.Second
	if r.tot.long {
		window = 6 * time.Second // more than one compactor tick
	}
	first, err := r.db.Stats()
	if err != nil {
		return err
	}
	prev, start, stable := first, time.Now(), time.Now()
	for time.Since(stable) < window {
		if time.Since(start) > bound {
			d := prev.Sub(first)
			return fmt.Errorf("background work did not settle within %v of idleness (%s): %d bytes written, %d snapshots, %d compactions",
				bound, r.opts.soakString(), d.BytesWritten, d.Snapshots, d.Compactions)
		}
		time.Sleep(20 * time.Millisecond)
		st, err := r.db.Stats()
		if err != nil {
			return err
		}
		if st.BytesWritten != prev.BytesWritten || st.Snapshots != prev.Snapshots {
			stable = time.Now()
		}
		prev = st
	}
	d := prev.Sub(first)
	r.note("quiet after %v: %d bytes written, %d snapshots, %d compactions",
		time.Since(start).Round(time.Millisecond), d.BytesWritten, d.Snapshots, d.Compactions)
	r.tot.quietBytes += d.BytesWritten
	r.tot.quietWait = max(r.tot.quietWait, time.Since(start)-window)
	if err := r.checkAll(); err != nil {
		return err
	}
	if r.gate(12) {
		return nil
	}
	// Background snapshots must not run while the test writes (item 12).
	return r.cleanRestart(r.drawOpts(false))
}
