package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgryski/go-farm"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/vfs"
)

// The soak test's model and its write operations (see soak_test.go).
//
// Every write goes through the sweep model (swModel, sweep_model_test.go):
// each call is a unit, values are swVal(key, write, size) so a read names
// the write it returns, and a crash image or a checkpoint is judged with
// swSnap.check, the sync modes' durability contract. Next to it the soak
// keeps the exact current state (cur: key -> write, -1 absent) and the
// expiry of every TTL'd write on the fake clock, so every read of the
// running DB has exactly one right answer.

// soakCollisionKeys is the number of crafted keys whose hashes share one
// shard's last home slots: Overflow+1 is what the index guarantees to
// hold, so none of their puts may be refused while the database runs.
const soakCollisionKeys = index.Overflow + 1

// soakCollisionShard is the shard the crafted keys fall in.
const soakCollisionShard = 0x0abc

// soakHash is Options.hash for the soak: farm's hash, except for the
// crafted keys "cNN", whose fingerprints are the top ones of one shard.
func soakHash(k []byte) uint64 {
	if len(k) == 3 && k[0] == 'c' {
		i := uint64(k[1]-'0')*10 + uint64(k[2]-'0')
		fp := uint64(1)<<index.FPBits - 1 - i
		return uint64(soakCollisionShard)<<(64-index.ShardBits) | fp<<(64-index.ShardBits-index.FPBits) | i
	}
	return farm.Fingerprint64(k)
}

// soakRunner runs one seed.
type soakRunner struct {
	seed uint64
	rnd  *rand.Rand
	clk  *fakeClock
	mem  *vfs.MemFS // the disk
	inj  *soakInjector
	dir  string
	opts *Options
	db   *DB
	m    *swModel

	// mu guards cur, exps and hist: a second goroutine writes during
	// snapshots and checkpoints.
	mu   sync.Mutex
	cur  map[string]int
	exps map[int]int64 // write -> expiry (Unix ms); absent: no TTL
	hist []string      // the last soakHistory operations
	step int

	tot     *soakTotals
	epoch   soakEpoch // the options of the current open
	gate    func(item int) bool
	hung    bool        // a call never returned: do not touch the DB again
	full    atomic.Bool // a write was refused with ErrFull
	segSize int64       // the segment size of the last open that worked
	lastGen uint64
}

const soakHistory = 50

// soakEpoch describes the options of one open.
type soakEpoch struct {
	bg    bool // background workers on short intervals
	quiet bool // opened for a quiet check
}

func (r *soakRunner) note(format string, args ...any) {
	s := fmt.Sprintf("%d: ", r.step) + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.hist = append(r.hist, s)
	if len(r.hist) > soakHistory {
		r.hist = r.hist[len(r.hist)-soakHistory:]
	}
	r.mu.Unlock()
}

func (r *soakRunner) history() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.hist, "\n")
}

func (r *soakRunner) nowMs() int64 { return r.clk.ms.Load() }

// key draws a key: mostly plain ones, sometimes a crafted colliding one.
func (r *soakRunner) key(rnd *rand.Rand) string {
	if r.gate(7) && rnd.IntN(12) == 0 {
		return fmt.Sprintf("c%02d", rnd.IntN(soakCollisionKeys))
	}
	if rnd.IntN(4) == 0 {
		return fmt.Sprintf("k%04d", rnd.IntN(soakPlainKeys)) // the whole key space
	}
	return fmt.Sprintf("k%04d", rnd.IntN(soakHotKeys)) // hot keys
}

// soakPlainKeys is the key space; the first soakHotKeys are written and
// read most.
const soakPlainKeys, soakHotKeys = 2000, 200

func soakKeys() []string {
	var ks []string
	for i := range soakPlainKeys {
		ks = append(ks, fmt.Sprintf("k%04d", i))
	}
	for i := range soakCollisionKeys {
		ks = append(ks, fmt.Sprintf("c%02d", i))
	}
	return ks
}

// size draws a value size; big values roll small segments quickly, so
// segment ids wrap.
func (r *soakRunner) size(rnd *rand.Rand, batch bool) int {
	if seg := int(r.opts.SegmentSize); r.gate(13) && !batch && seg >= 16<<10 && rnd.IntN(60) == 0 {
		// A value too large for a 4 KiB segment: later opens with smaller
		// segments must still read it (item 13).
		return 4000 + rnd.IntN(seg/2-4200)
	}
	switch p := rnd.IntN(40); {
	case p == 0 && !batch:
		return 1000 + rnd.IntN(800)
	case p < 6 && !batch:
		return 300 + rnd.IntN(500)
	}
	return 16 + rnd.IntN(180)
}

// ttl draws a TTL of minutes to hours.
func (r *soakRunner) ttl(rnd *rand.Rand) time.Duration {
	if rnd.IntN(3) == 0 {
		return time.Duration(1+rnd.IntN(10)) * time.Minute
	}
	return time.Duration(10+rnd.IntN(170)) * time.Minute
}

// soakOp is one write of a unit as drawn.
type soakOp struct {
	w   swWrite
	ttl time.Duration
}

func (r *soakRunner) randOp(rnd *rand.Rand, batch bool) soakOp {
	op := soakOp{w: swWrite{key: r.key(rnd)}}
	switch p := rnd.IntN(20); {
	case p < 5:
		op.w.del = true
	case p < 9:
		op.ttl = r.ttl(rnd)
	}
	if !op.w.del {
		op.w.size = r.size(rnd, batch)
	}
	return op
}

func (r *soakRunner) durable() bool {
	return r.opts.Sync == SyncGroup || r.opts.Sync == SyncAlways
}

// refused reports whether err, returned for ops, is a refusal that wrote
// nothing: a crafted collision the index cannot hold, or (with item 2's
// feature on, where the log may fill) a full log for a unit that puts,
// which the next step relieves with Compact. A unit of deletes only is never refused: a full
// log must not block deletes.
func (r *soakRunner) refused(ops []soakOp, err error) bool {
	if errors.Is(err, index.ErrCollision) || errors.Is(err, ErrBatchTooLarge) {
		return true
	}
	if !errors.Is(err, ErrFull) || !r.gate(2) {
		return false // the log is compacted long before it fills
	}
	for _, op := range ops {
		if !op.w.del {
			r.full.Store(true)
			return true
		}
	}
	return false
}

// apply writes a unit (one op, or a batch if batch) to db and records it in
// the models. It returns the error of the call if it is not a refusal.
func (r *soakRunner) apply(db *DB, ops []soakOp, batch bool) error {
	ws := make([]swWrite, len(ops))
	for i := range ops {
		ws[i] = ops[i].w
	}
	u, first := r.m.begin(ws, batch)
	now := r.nowMs()
	r.mu.Lock()
	for i, op := range ops {
		if op.ttl > 0 {
			r.exps[first+i] = now + op.ttl.Milliseconds()
		}
	}
	r.mu.Unlock()
	var err error
	if !batch {
		op := ops[0]
		k := []byte(op.w.key)
		switch {
		case op.w.del:
			err = db.Delete(k)
		case op.ttl > 0:
			err = db.PutTTL(k, swVal(op.w.key, first, op.w.size), op.ttl)
		default:
			err = db.Put(k, swVal(op.w.key, first, op.w.size))
		}
	} else {
		var b Batch
		for i, op := range ops {
			k := []byte(op.w.key)
			switch {
			case op.w.del:
				b.Delete(k)
			case op.ttl > 0:
				b.PutTTL(k, swVal(op.w.key, first+i, op.w.size), op.ttl)
			default:
				b.Put(k, swVal(op.w.key, first+i, op.w.size))
			}
		}
		err = db.Write(&b)
	}
	if r.refused(ops, err) {
		// Nothing was written: the unit becomes an empty one.
		r.m.mu.Lock()
		r.m.units[u] = swUnit{first: first, status: swOK, batch: batch}
		r.m.mu.Unlock()
		r.tot.refused.Add(1)
		r.note("unit %d refused: %v", u, err)
		return nil
	}
	r.m.end(u, err, r.durable())
	if err != nil {
		return fmt.Errorf("unit %d (%s): %w", u, describeOps(ops, first), err)
	}
	r.mu.Lock()
	for i, op := range ops {
		if op.w.del {
			r.cur[op.w.key] = -1
		} else {
			r.cur[op.w.key] = first + i
		}
	}
	r.mu.Unlock()
	r.tot.ops.Add(int64(len(ops)))
	return nil
}

func describeOps(ops []soakOp, first int) string {
	var b strings.Builder
	for i, op := range ops {
		if i > 0 {
			b.WriteString(", ")
		}
		switch {
		case op.w.del:
			fmt.Fprintf(&b, "del %s", op.w.key)
		case op.ttl > 0:
			fmt.Fprintf(&b, "put %s=w%d(%dB) ttl %v", op.w.key, first+i, op.w.size, op.ttl)
		default:
			fmt.Fprintf(&b, "put %s=w%d(%dB)", op.w.key, first+i, op.w.size)
		}
	}
	return b.String()
}

// write draws and applies one unit on the test's goroutine.
func (r *soakRunner) write(batch bool) error {
	n := 1
	if batch {
		n = 1 + r.rnd.IntN(8)
	}
	ops := make([]soakOp, n)
	for i := range ops {
		ops[i] = r.randOp(r.rnd, batch)
		if batch && i > 0 && r.rnd.IntN(4) == 0 {
			ops[i].w.key = ops[r.rnd.IntN(i)].w.key // a key repeated in the batch
		}
	}
	r.m.mu.Lock()
	first := len(r.m.writes)
	r.m.mu.Unlock()
	kind := "write"
	if batch {
		kind = "batch"
	}
	r.note("%s %s", kind, describeOps(ops, first))
	return r.apply(r.db, ops, batch)
}

// want returns the write key must read as now (-1: absent) and its value.
func (r *soakRunner) want(key string) (int, []byte) {
	r.mu.Lock()
	w := r.cur[key]
	exp, ttl := r.exps[w]
	r.mu.Unlock()
	if w < 0 || ttl && exp <= r.nowMs() {
		return -1, nil
	}
	r.m.mu.Lock()
	size := r.m.writes[w].size
	r.m.mu.Unlock()
	return w, swVal(key, w, size)
}

// expired reports whether write w has a TTL that has run out.
func (r *soakRunner) expired(w int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	exp, ok := r.exps[w]
	return ok && exp <= r.nowMs()
}

// markExpired flags every expired TTL'd write as short in the sweep model
// and in the snapshot of it s (which may hold an older copy of the writes),
// so that its checker lets them read as absent. The clock never goes back,
// so a flag once set stays true. Only the test's goroutine reads the
// flags, and no other goroutine writes meanwhile.
func (r *soakRunner) markExpired(s *swSnap) {
	now := r.nowMs()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	for w, exp := range r.exps {
		if exp <= now {
			r.m.writes[w].short = true
			if w < len(s.writes) {
				s.writes[w].short = true
			}
		}
	}
}

// checkRead compares one read (found, value) of key with the model.
func (r *soakRunner) checkRead(what, key string, found bool, v []byte) error {
	w, val := r.want(key)
	switch {
	case w < 0 && found:
		got, _ := parseSwVal(key, v)
		return fmt.Errorf("%s %s: found (write %d, %d bytes), want absent", what, key, got, len(v))
	case w >= 0 && !found:
		return fmt.Errorf("%s %s: absent, want write %d", what, key, w)
	case found && v != nil && !bytes.Equal(v, val):
		got, err := parseSwVal(key, v)
		return fmt.Errorf("%s %s: read write %d (%v), want write %d", what, key, got, err, w)
	}
	return nil
}

func (r *soakRunner) get(key string) error {
	v, err := r.db.Get([]byte(key))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return r.checkRead("get", key, err == nil, v)
}

func (r *soakRunner) has(key string) error {
	ok, err := r.db.Has([]byte(key))
	if err != nil {
		return fmt.Errorf("has %s: %w", key, err)
	}
	return r.checkRead("has", key, ok, nil)
}
