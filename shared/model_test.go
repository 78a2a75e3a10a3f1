package shared

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/vfs"
)

// The model test: random puts of values drawn from a small set (inline
// and shared sizes, each with a random per-key header), deletes,
// overwrites, updates, TTLs on a fake clock, restarts, compactions and
// crashes, against a plain Go model of what the store promises. After
// each step the store must match the model exactly: every key reads its
// value (with its expiry), Stats equal the model's figures, the stored
// shared values are exactly the model's, and Check finds nothing wrong.
// The model keeps the documented lag: a key with an expiry counts until
// its expiry bucket ends, and a value stays stored until a write finds
// none of its references counted or its own expiry passes.
//
// Crashes: the filesystem is cloned as after a power loss (synced data
// kept, the rest kept, zeroed or lost at random) before every few file
// operations, in the middle of any step; each image must open with
// either the state before its step or the state after it, whole.

// mVer is one version of a key.
type mVer struct {
	value  []byte
	e, g   int64 // expiry and bucket (Unix ms; 0: none)
	shared bool
	h      hash
	size   int64
}

func (v mVer) live(now int64) bool    { return v.e == 0 || v.e > now }
func (v mVer) counted(now int64) bool { return v.e == 0 || v.g > now }

// mVal is a stored shared value: its record's expiry and data size.
type mVal struct{ vexp, size int64 }

func (v mVal) stored(now int64) bool { return v.vexp == 0 || v.vexp > now }

// model is the store's promised state. A model is never changed once a
// step is done (steps make a changed clone), so crash images can keep
// pointers to the states before and after their step.
type model struct {
	minSize int
	keys    map[string]mVer // current versions (perhaps expired)
	ghosts  []mVer          // expired versions replaced: counted until their bucket ends
	vals    map[hash]mVal
}

func newModel(minSize int) *model {
	return &model{minSize: minSize, keys: map[string]mVer{}, vals: map[hash]mVal{}}
}

func (m *model) clone() *model {
	return &model{minSize: m.minSize, keys: maps.Clone(m.keys), ghosts: slices.Clone(m.ghosts), vals: maps.Clone(m.vals)}
}

func (m *model) counted(now int64, fn func(mVer)) {
	for _, v := range m.keys {
		if v.counted(now) {
			fn(v)
		}
	}
	for _, v := range m.ghosts {
		if v.counted(now) {
			fn(v)
		}
	}
}

// touch applies the rule for h's stored value after a write changed its
// references (change.finishMeta).
func (m *model) touch(h hash, now int64) {
	var perm, total, maxG, size int64
	m.counted(now, func(v mVer) {
		if v.shared && v.h == h {
			total++
			size = v.size
			if v.e == 0 {
				perm++
			} else {
				maxG = max(maxG, v.g)
			}
		}
	})
	old, ok := m.vals[h]
	stored := ok && old.stored(now)
	if total == 0 {
		delete(m.vals, h)
		return
	}
	var vexp int64
	switch {
	case perm > 0:
	case !stored || old.vexp == 0 || old.vexp < maxG:
		vexp = maxG
	default:
		vexp = old.vexp
	}
	m.vals[h] = mVal{vexp, size}
}

// set is a put of value under key with expiry e (> now, or 0).
func (m *model) set(key string, value []byte, e, now int64) {
	var touched []hash
	if old, ok := m.keys[key]; ok {
		switch {
		case old.live(now) && old.shared:
			touched = append(touched, old.h)
		case !old.live(now) && old.counted(now):
			m.ghosts = append(m.ghosts, old)
		}
	}
	v := mVer{value: value, e: e}
	if e != 0 {
		v.g = bucketOf(e, levelFor(now, e))
	}
	if data := value[clampPrefix(value):]; len(data) >= m.minSize {
		v.shared, v.h, v.size = true, hashOf(data), int64(len(data))
		touched = append(touched, v.h)
	}
	m.keys[key] = v
	for _, h := range touched {
		m.touch(h, now)
	}
}

// remove is a delete of key: only a live key is deleted (an expired one
// keeps counting until its bucket ends).
func (m *model) remove(key string, now int64) {
	old, ok := m.keys[key]
	if !ok || !old.live(now) {
		return
	}
	delete(m.keys, key)
	if old.shared {
		m.touch(old.h, now)
	}
}

// clampPrefix is headerPrefix as the store applies it.
func clampPrefix(v []byte) int { return min(headerPrefix(v), len(v)) }

func (m *model) get(key string, now int64) (mVer, bool) {
	v, ok := m.keys[key]
	return v, ok && v.live(now)
}

func (m *model) stats(now int64) Stats {
	var st Stats
	m.counted(now, func(v mVer) {
		st.Keys++
		if v.shared {
			st.Refs++
			st.LogicalBytes += v.size
		}
	})
	for _, v := range m.vals {
		if v.stored(now) {
			st.Values++
			st.StoredBytes += v.size
		}
	}
	st.BytesSaved = st.LogicalBytes - st.StoredBytes
	if st.Values > 0 {
		st.KeysPerValue = float64(st.Refs) / float64(st.Values)
	}
	return st
}

// storedSet is the model's stored values at now.
func (m *model) storedSet(now int64) map[hash]bool {
	out := map[hash]bool{}
	for h, v := range m.vals {
		if v.stored(now) {
			out[h] = true
		}
	}
	return out
}

// check compares a store with the model at now; it returns the first
// difference.
func (m *model) check(s *Store, keys []string, now int64) error {
	for _, k := range keys {
		got, it, err := s.AppendItem(nil, []byte(k))
		want, ok := m.get(k, now)
		switch {
		case !ok && errors.Is(err, engine.ErrNotFound):
		case !ok:
			return fmt.Errorf("key %s: read %q (%v), want absent", k, got, err)
		case err != nil:
			return fmt.Errorf("key %s: %w, want %q", k, err, want.value)
		case !bytes.Equal(got, want.value):
			return fmt.Errorf("key %s: read %q, want %q", k, got, want.value)
		case expiryMs(it.Expiry) != want.e:
			return fmt.Errorf("key %s: expiry %v, want %d", k, it.Expiry, want.e)
		}
	}
	st, err := s.Stats()
	if err != nil {
		return err
	}
	if want := m.stats(now); st != want {
		return fmt.Errorf("stats %+v, want %+v", st, want)
	}
	got := map[hash]bool{}
	err = s.db.ForEach(func(k, _ []byte) error {
		if IsReserved(k) && k[len(Reserved)] == kindValue {
			got[hash(k[len(Reserved)+1:])] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if want := m.storedSet(now); !maps.Equal(got, want) {
		return fmt.Errorf("stored values %d, want %d", len(got), len(want))
	}
	rep, err := s.Check()
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("check: %v", rep.Problems)
	}
	return nil
}

// crashImage is the disk as after a power loss in the middle of a step.
type crashImage struct {
	fs        *vfs.MemFS
	now       int64
	pre, post *model
	what      string
}

type modelRun struct {
	t          *testing.T
	rnd        *rand.Rand
	clock      *fakeClock
	mem        *vfs.MemFS
	db         *engine.DB
	s          *Store
	m, pending *model
	keys       []string
	data       [][]byte
	opts       Options
	step       int
	imageEvery int64
	fileOps    int64
	quiet      bool // no images (while an abandoned handle closes)
	images     []crashImage
	counts     map[string]int
}

func (r *modelRun) dbOpts() *engine.Options {
	o := dbOpts(vfs.NewErrorFS(r.mem, r), r.clock)
	o.SegmentSize = 16 << 10
	o.Sync = engine.SyncAlways
	o.ExpiryInterval = 10 * time.Millisecond // expired entries leave the index, so Compact drops them
	return o
}

// MaybeError is the crash injector: before every imageEvery-th file
// operation, the disk as after a power loss then.
func (r *modelRun) MaybeError(op vfs.Op, name string) error {
	if r.quiet || r.pending == nil {
		return nil
	}
	r.fileOps++
	if r.fileOps%r.imageEvery != 0 {
		return nil
	}
	var rnd *rand.Rand
	if r.fileOps/r.imageEvery%2 == 1 {
		rnd = rand.New(rand.NewPCG(uint64(r.step), uint64(r.fileOps)))
	}
	r.images = append(r.images, crashImage{fs: r.mem.CrashClone(rnd), now: r.clock.ms.Load(), pre: r.m, post: r.pending,
		what: fmt.Sprintf("step %d, crash before file op %d (%v %s)", r.step, r.fileOps, op, name)})
	return nil
}

func (r *modelRun) open() {
	db, err := engine.Open("/db", r.dbOpts())
	require.NoError(r.t, err, "step %d: open", r.step)
	s, err := Open(db, r.opts)
	require.NoError(r.t, err)
	r.db, r.s = db, s
}

func (r *modelRun) now() int64 { return r.clock.ms.Load() }

func (r *modelRun) value() []byte {
	n := r.rnd.IntN(4)
	v := []byte{byte(n)}
	for range n {
		v = append(v, byte(r.rnd.Uint32()))
	}
	return append(v, r.data[r.rnd.IntN(len(r.data))]...)
}

func (r *modelRun) ttl() time.Duration {
	return []time.Duration{300 * time.Millisecond, 2 * time.Second, 30 * time.Second, 10 * time.Minute}[r.rnd.IntN(4)]
}

// do runs one step: next is the model after it, run the step itself.
func (r *modelRun) do(name string, next *model, run func() error) {
	r.counts[name]++
	r.pending = next
	err := run()
	require.NoError(r.t, err, "step %d: %s", r.step, name)
	r.m = next
}

func (r *modelRun) randomStep() {
	k := r.keys[r.rnd.IntN(len(r.keys))]
	now := r.now()
	next := r.m.clone()
	switch p := r.rnd.IntN(100); {
	case p < 30:
		v := r.value()
		next.set(k, v, 0, now)
		r.do("put", next, func() error { return r.s.Put([]byte(k), v) })
	case p < 50:
		v, ttl := r.value(), r.ttl()
		next.set(k, v, now+ttl.Milliseconds(), now)
		r.do("put-ttl", next, func() error { return r.s.PutTTL([]byte(k), v, ttl) })
	case p < 62:
		next.remove(k, now)
		r.do("delete", next, func() error { return r.s.Delete([]byte(k)) })
	case p < 80:
		r.update(k, next, now)
	case p < 88:
		r.do("advance", next, func() error {
			r.clock.Advance([]time.Duration{50 * time.Millisecond, 700 * time.Millisecond, 5 * time.Second, 3 * time.Minute}[r.rnd.IntN(4)])
			return nil
		})
	case p < 92:
		r.do("restart", next, func() error {
			if err := r.db.Close(); err != nil {
				return err
			}
			r.open()
			return nil
		})
	case p < 96:
		r.do("compact", next, r.db.Compact)
	default:
		r.do("crash", next, func() error {
			var rnd *rand.Rand
			if r.rnd.IntN(2) == 0 {
				rnd = rand.New(rand.NewPCG(uint64(r.step), 77))
			}
			img := r.mem.CrashClone(rnd)
			r.quiet = true
			_ = r.db.Close() // the abandoned handle: its files are not the image's
			r.quiet = false
			r.mem = img
			r.open()
			return nil
		})
	}
}

// update drives Store.Update: a touch (same value, new expiry), a swap
// of the data, a remove or a keep, each decided from what fn reads.
func (r *modelRun) update(k string, next *model, now int64) {
	cur, found := r.m.get(k, now)
	kind := r.rnd.IntN(4)
	var newV []byte
	var e int64
	switch {
	case kind == 0 && found: // touch
		newV = cur.value
		if r.rnd.IntN(3) > 0 {
			e = now + r.ttl().Milliseconds()
		}
		next.set(k, newV, e, now)
	case kind == 1: // swap the data, keep the header
		newV = r.value()
		if found {
			p := clampPrefix(cur.value)
			newV = append(slices.Clone(cur.value[:p]), newV[clampPrefix(newV):]...)
		}
		next.set(k, newV, 0, now)
	case kind == 2:
		next.remove(k, now)
	}
	name := []string{"update-touch", "update-swap", "update-remove", "update-keep"}[kind]
	r.do(name, next, func() error {
		_, err := r.s.Update([]byte(k), func(v []byte, it engine.Item, f bool, _ uint64) (engine.Change, error) {
			if f != found || found && (!bytes.Equal(v, cur.value) || expiryMs(it.Expiry) != cur.e) {
				return engine.Change{}, fmt.Errorf("update read %q (found %v, expiry %v), want %q (found %v, expiry %d)", v, f, it.Expiry, cur.value, found, cur.e)
			}
			switch {
			case newV != nil:
				return engine.Change{Op: engine.Set, Value: newV, Expiry: expiryTime(e)}, nil
			case kind == 2:
				return engine.Change{Op: engine.Remove}, nil
			}
			return engine.Change{Op: engine.Keep}, nil
		})
		return err
	})
}

func (r *modelRun) checkNow(what string) {
	r.t.Helper()
	require.NoError(r.t, r.m.check(r.s, r.keys, r.now()), "step %d (%s)", r.step, what)
}

// checkImage opens a crash image at its time: it must hold the state
// before its step or after it.
func (r *modelRun) checkImage(im crashImage) {
	r.t.Helper()
	o := dbOpts(im.fs, nil)
	o.SegmentSize = 16 << 10
	o.Clock = func() time.Time { return time.UnixMilli(im.now) }
	db, err := engine.Open("/db", o)
	require.NoError(r.t, err, im.what)
	defer db.Close()
	s, err := Open(db, r.opts)
	require.NoError(r.t, err, im.what)
	errPre := im.pre.check(s, r.keys, im.now)
	if errPre == nil {
		return
	}
	errPost := im.post.check(s, r.keys, im.now)
	require.NoError(r.t, errPost, "%s: neither the state before the step (%v) nor after it", im.what, errPre)
}

func TestModel(t *testing.T) {
	steps, every := 400, int64(3)
	if testing.Short() || raceEnabled {
		steps, every = 150, 5
	}
	for seed := range uint64(2) {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			runModel(t, seed, steps, every)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int, imageEvery int64) {
	r := &modelRun{t: t, rnd: rand.New(rand.NewPCG(seed, 12)), clock: newClock(), mem: vfs.NewMem(),
		opts: Options{MinSize: 16, Prefix: headerPrefix}, imageEvery: imageEvery, counts: map[string]int{}}
	for i := range 24 {
		r.keys = append(r.keys, "key-"+strconv.Itoa(i))
	}
	for _, n := range []int{0, 5, 15, 16, 40, 200, 1000, 3000} {
		d := make([]byte, n)
		for i := range d {
			d[i] = byte('a' + (n+i)%26)
		}
		r.data = append(r.data, d)
	}
	r.m = newModel(r.opts.MinSize)
	r.open()
	for r.step = range steps {
		r.randomStep()
		if r.step%5 == 0 {
			r.checkNow("after " + fmt.Sprint(r.counts))
		}
	}
	r.checkNow("end of the workload")

	// Past every TTL and every bucket: only keys without expiry remain,
	// and, once the expirer and a compaction have run, the database
	// holds exactly their records, the values they refer to (value and
	// meta records), the no-expiry bucket and the format record.
	r.pending = r.m
	r.clock.Advance(10*time.Minute + 10*time.Minute/8 + 2*time.Second)
	r.checkNow("past every expiry")
	want := r.m.stats(r.now())
	wantKeys := want.Keys + 2*want.Values + 2
	deadline := time.Now().Add(5 * time.Second)
	for {
		require.NoError(t, r.db.Compact())
		st, err := r.db.Stats()
		require.NoError(t, err)
		if st.Keys == wantKeys {
			break
		}
		require.True(t, time.Now().Before(deadline), "engine keys %d, want %d", st.Keys, wantKeys)
		time.Sleep(10 * time.Millisecond)
	}
	r.checkNow("after the final compaction")
	require.NoError(t, r.db.Close())
	r.open()
	r.checkNow("reopened")
	require.NoError(t, r.db.Close())

	for _, im := range r.images {
		r.checkImage(im)
	}
	t.Logf("%d steps %v; %d crash images checked; final: %+v", steps, r.counts, len(r.images), want)
}
