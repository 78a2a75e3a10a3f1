package engine

import (
	"fmt"

	"github.com/marlinkv/marlin/segment"
)

// The soak's loads: bursts of writes and deletes, a fill of every segment
// id, and the compaction a user would run when the log runs short of ids.

// relieve compacts when the log uses most segment ids, as a user would
// (background compaction may be off). Once item 2 is fixed, the log may
// fill every id: a put may then be refused with ErrFull (a delete never),
// and Compact must succeed and make writes work again.
func (r *soakRunner) relieve() error {
	limit := 600
	if r.gate(2) {
		limit = segment.MaxSegments + 1 // only after ErrFull
	}
	st, err := r.db.Stats()
	if err != nil {
		return err
	}
	r.noteGen(st)
	full := r.full.Swap(false)
	if len(st.Segments) < limit && !full {
		return nil
	}
	r.note("compact (%d segments, a write refused as full: %v)", len(st.Segments), full)
	if err := r.db.Compact(); err != nil {
		return fmt.Errorf("compact with %d segments in use: %w", len(st.Segments), err)
	}
	if full {
		// Freeing space makes writes work again.
		k := r.key(r.rnd)
		r.note("write %s after the compaction", k)
		if err := r.apply(r.db, []soakOp{{w: swWrite{key: k, size: 100}}}, false); err != nil {
			return err
		}
		if r.full.Load() {
			return fmt.Errorf("a put was refused with ErrFull right after Compact freed %d segments", len(st.Segments))
		}
	}
	return nil
}

// fill reopens with 4 KiB segments and no compaction and writes large
// values until the log has used every segment id (item 2): a put may then
// be refused with ErrFull, but a delete must work, the directory must
// reopen, and Compact must free ids so that writes work again.
func (r *soakRunner) fill() error {
	if !r.gate(2) {
		return nil
	}
	o := r.drawOpts(false)
	o.SegmentSize, o.WriteBufferSize, o.CompactionThreshold = 4<<10, 4096, -1
	if err := r.cleanRestart(o); err != nil {
		return err
	}
	r.note("fill: write until the log is full")
	n := 0
	for ; n < 3*segment.MaxSegments && !r.full.Load(); n++ {
		k := fmt.Sprintf("k%04d", r.rnd.IntN(soakHotKeys))
		if err := r.apply(r.db, []soakOp{{w: swWrite{key: k, size: 1500 + r.rnd.IntN(300)}}}, false); err != nil {
			return fmt.Errorf("fill, write %d: %w", n, err)
		}
	}
	st, err := r.db.Stats()
	if err != nil {
		return err
	}
	r.note("fill: %d writes, %d segments, full: %v", n, len(st.Segments), r.full.Load())
	if !r.full.Load() {
		return nil // the engine kept the log from filling
	}
	r.mu.Lock()
	var victim string
	for _, k := range r.m.keys {
		if r.cur[k] >= 0 {
			victim = k
			break
		}
	}
	r.mu.Unlock()
	if victim != "" {
		r.note("fill: delete %s in the full log", victim)
		if err := r.apply(r.db, []soakOp{{w: swWrite{key: victim, del: true}}}, false); err != nil {
			return fmt.Errorf("delete in a full log: %w", err)
		}
	}
	if err := r.cleanRestart(o); err != nil {
		return fmt.Errorf("restart with a full log: %w", err)
	}
	r.full.Store(true)
	return r.relieve()
}

// burst writes many units in a row (a load), so that small segments roll
// and ids wrap; half of the time it deletes a third of the present keys
// instead, leaving tombstones for compaction to carry.
func (r *soakRunner) burst() error {
	if r.rnd.IntN(2) == 0 {
		var dels []string
		r.mu.Lock()
		for _, k := range r.m.keys {
			if r.cur[k] >= 0 && r.rnd.IntN(3) == 0 {
				dels = append(dels, k)
			}
		}
		r.mu.Unlock()
		r.note("burst: delete %d keys", len(dels))
		for _, k := range dels {
			if err := r.apply(r.db, []soakOp{{w: swWrite{key: k, del: true}}}, false); err != nil {
				return err
			}
		}
		return nil
	}
	n := 50 + r.rnd.IntN(350)
	r.note("burst: %d writes", n)
	for range n {
		op := r.randOp(r.rnd, false)
		if !op.w.del && r.rnd.IntN(2) == 0 {
			op.w.size = 400 + r.rnd.IntN(1400)
		}
		if err := r.apply(r.db, []soakOp{op}, false); err != nil {
			return err
		}
		if r.full.Load() {
			return r.relieve()
		}
	}
	return nil
}

func (r *soakRunner) noteGen(st Stats) {
	for _, s := range st.Segments {
		r.lastGen = max(r.lastGen, s.Generation)
	}
}
