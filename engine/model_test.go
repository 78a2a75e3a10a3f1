package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// The model test replays random histories of every public operation against
// a plain Go map and compares every read, every full iteration and the
// Stats figures with it, closing and reopening the DB at random points.

// ttlMargin is the slack around a TTL'd key's expiry within which the test
// does not assert whether the key is visible: expiries are computed by the
// engine in whole milliseconds at a moment the test only brackets.
const ttlMargin = 20 * time.Millisecond

// modelVal is the model's state of one present key.
type modelVal struct {
	val []byte
	// For a TTL'd key, the engine's expiry lies in [expLo, expHi] (the
	// TTL added to the instants just before and after the call that
	// computed it). Zero times mean no TTL.
	expLo, expHi time.Time
}

func (m modelVal) hasTTL() bool { return !m.expLo.IsZero() }

// state classifies the key at a read that started at t0 and ended at t1:
// definitely visible, definitely expired, or ambiguous.
func (m modelVal) state(t0, t1 time.Time) (alive, expired bool) {
	if !m.hasTTL() {
		return true, false
	}
	if t1.Add(ttlMargin).Before(m.expLo) {
		return true, false
	}
	if m.expHi.Add(ttlMargin).Before(t0) {
		return false, true
	}
	return false, false
}

type modelConfig struct {
	name    string
	fs      func(t *testing.T) (vfs.FS, string)
	segSize int64
	wbs     int
	sync    SyncMode
	ops     int
	// bgCompact leaves the background compactor on (aggressively). The
	// compactor appends to the log at any moment, so the byte accounting
	// identity, which needs a quiet log, is checked only without it;
	// every other check applies.
	bgCompact bool
}

func modelMemFS(*testing.T) (vfs.FS, string) { return vfs.NewMem(), "/db" }
func modelOSFS(t *testing.T) (vfs.FS, string) {
	return vfs.Default, t.TempDir()
}

func TestModel(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	ops := 1500
	switch {
	case testing.Short():
		ops = 400
	case raceEnabled:
		ops = 700 // make test also runs the full length without the race detector
	}
	var cfgs []modelConfig
	for _, seg := range []int64{4 << 10, 64 << 10, 1 << 20} {
		for _, wbs := range []int{4096, 64 << 10} {
			if int64(wbs) > seg {
				continue // not a valid configuration (WriteBufferSize <= SegmentSize)
			}
			for _, sm := range []SyncMode{SyncNone, SyncGroup, SyncAlways, SyncPeriodic} {
				cfgs = append(cfgs, modelConfig{
					name: fmt.Sprintf("mem/seg=%d/wbs=%d/%v", seg, wbs, sm),
					fs:   modelMemFS, segSize: seg, wbs: wbs, sync: sm, ops: ops,
				})
			}
		}
	}
	cfgs = append(cfgs,
		modelConfig{
			name: "os/seg=65536/wbs=4096/none", fs: modelOSFS,
			segSize: 64 << 10, wbs: 4096, sync: SyncNone, ops: ops,
		},
		modelConfig{
			name: "mem/seg=4096/wbs=4096/none/bgcompact", fs: modelMemFS,
			segSize: 4 << 10, wbs: 4096, sync: SyncNone, ops: ops, bgCompact: true,
		},
		modelConfig{
			name: "mem/seg=65536/wbs=4096/group/bgcompact", fs: modelMemFS,
			segSize: 64 << 10, wbs: 4096, sync: SyncGroup, ops: ops, bgCompact: true,
		},
	)
	baseSeed := uint64(time.Now().UnixNano())
	fixed := os.Getenv("MARLIN_MODEL_SEED") // reproduce: run one subtest with its seed
	if fixed != "" {
		var err error
		baseSeed, err = strconv.ParseUint(fixed, 10, 64)
		require.NoError(t, err)
	}
	for i, c := range cfgs {
		for _, ttl := range []bool{false, true} {
			name := c.name + "/plain"
			if ttl {
				name = c.name + "/ttl"
			}
			seed := baseSeed + uint64(i)*2
			if ttl {
				seed++
			}
			if fixed != "" {
				seed = baseSeed
			}
			t.Run(name, func(t *testing.T) {
				defer func() {
					if t.Failed() {
						t.Logf("FAILED with seed %d; reproduce with MARLIN_MODEL_SEED=%d go test ./engine/ -run 'TestModel/%s$'",
							seed, seed, name)
					}
				}()
				runModel(t, c, ttl, seed)
			})
		}
	}
}

type modelRun struct {
	t      *testing.T
	rnd    *rand.Rand
	opts   *Options
	fs     vfs.FS
	dir    string
	db     *DB
	keys   [][]byte
	model  map[string]modelVal
	useTTL bool
	step   int
	maxVal int
	// tooLarge counts batches refused with ErrBatchTooLarge.
	tooLarge    int
	compactions int
	removed     int64 // segments removed by compaction, over all opens
	// quiet: nothing but the test writes to the log (no background
	// compaction), so the byte accounting can be checked exactly.
	quiet bool
}

func runModel(t *testing.T, c modelConfig, useTTL bool, seed uint64) {
	fs, dir := c.fs(t)
	opts := &Options{
		FS: fs, SegmentSize: c.segSize, WriteBufferSize: c.wbs, Sync: c.sync,
		SyncInterval: 5 * time.Millisecond, Logger: discardLogger,
		CompactionThreshold: -1, // explicit Compact calls only
	}
	if c.bgCompact {
		opts.CompactionThreshold = 0.2
	}
	o, err := opts.withDefaults()
	require.NoError(t, err)
	m := &modelRun{
		t: t, rnd: rand.New(rand.NewPCG(seed, seed^0x5eed)), opts: opts, fs: fs, dir: dir,
		model: map[string]modelVal{}, useTTL: useTTL, maxVal: o.MaxValueSize,
		quiet: !c.bgCompact,
	}
	// A small key space of distinct keys of 1..40 random bytes, so that
	// overwrites and deletes hit.
	seen := map[string]bool{}
	for len(m.keys) < 150 {
		k := make([]byte, 1+m.rnd.IntN(40))
		for i := range k {
			k[i] = byte(m.rnd.UintN(256))
		}
		if !seen[string(k)] {
			seen[string(k)] = true
			m.keys = append(m.keys, k)
		}
	}
	m.db, err = Open(dir, opts)
	require.NoError(t, err)
	defer func() {
		if m.db != nil {
			require.NoError(t, m.db.Close())
		}
	}()

	for m.step = 0; m.step < c.ops; m.step++ {
		switch p := m.rnd.IntN(1000); {
		case p < 300:
			m.put()
		case p < 380:
			if useTTL {
				m.putTTL()
			} else {
				m.put()
			}
		case p < 500:
			m.del()
		case p < 580:
			m.batch()
		case p < 640:
			m.checkGet()
		case p < 700:
			m.checkHas()
		case p < 760:
			m.checkAppend()
		case p < 820:
			m.checkView()
		case p < 835:
			m.checkForEach()
		case p < 845:
			m.reopen()
		case p < 855:
			require.NoError(t, m.db.Sync())
			m.checkStats(true)
		case p < 867:
			require.NoError(t, m.db.Compact(), m.ctx())
			m.compactions++
			m.checkStats(false)
		case p < 869:
			if useTTL {
				// Let short TTLs run out, so that expired keys are checked.
				time.Sleep(time.Duration(20+m.rnd.IntN(20)) * time.Millisecond)
			}
		default:
			m.checkGet()
		}
	}
	m.checkAll()
	m.reopen()
	m.checkAll()
	if useTTL {
		// Past every TTL: every TTL'd key must now read as expired, also
		// after a reopen.
		time.Sleep(50*time.Millisecond + 2*ttlMargin)
		m.checkAll()
		m.reopen()
		m.checkAll()
	}
	st, err := m.db.Stats()
	require.NoError(t, err)
	t.Logf("%d ops, %d keys at the end, %d batches refused as too large, %d explicit compactions, %d segments removed",
		c.ops, len(m.model), m.tooLarge, m.compactions, m.removed+st.SegmentsRemoved)
}

func (m *modelRun) ctx() string { return fmt.Sprintf("step %d", m.step) }

func (m *modelRun) key() []byte { return m.keys[m.rnd.IntN(len(m.keys))] }

func (m *modelRun) value() []byte {
	var n int
	if m.rnd.IntN(30) == 0 {
		// Occasionally a few KB, so records straddle (or exceed) the write
		// buffer.
		n = 1000 + m.rnd.IntN(4500)
	} else {
		n = m.rnd.IntN(301)
	}
	n = min(n, m.maxVal)
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(m.rnd.UintN(256))
	}
	return v
}

func (m *modelRun) ttl() time.Duration {
	return time.Duration(1+m.rnd.IntN(50)) * time.Millisecond
}

func (m *modelRun) put() {
	k, v := m.key(), m.value()
	require.NoError(m.t, m.db.Put(k, v), m.ctx())
	m.model[string(k)] = modelVal{val: v}
}

func (m *modelRun) putTTL() {
	k, v, d := m.key(), m.value(), m.ttl()
	t0 := time.Now()
	require.NoError(m.t, m.db.PutTTL(k, v, d), m.ctx())
	t1 := time.Now()
	m.model[string(k)] = modelVal{val: v, expLo: t0.Add(d), expHi: t1.Add(d)}
}

func (m *modelRun) del() {
	k := m.key()
	require.NoError(m.t, m.db.Delete(k), m.ctx())
	delete(m.model, string(k))
}

func (m *modelRun) batch() {
	var b Batch
	n := 1 + m.rnd.IntN(8)
	// Effects are applied to a copy of the model only once Write succeeds.
	next := map[string]*modelVal{}
	deleted := map[string]bool{}
	var ks [][]byte
	// The encoded size of the batch, to predict ErrBatchTooLarge.
	total := segment.Size(0, len(segment.EncodeCommit(n)), false)
	for range n {
		var k []byte
		if len(ks) > 0 && m.rnd.IntN(4) == 0 {
			k = ks[m.rnd.IntN(len(ks))] // the same key twice: the last op wins
		} else {
			k = m.key()
		}
		ks = append(ks, k)
		switch p := m.rnd.IntN(10); {
		case p < 3:
			b.Delete(k)
			total += segment.Size(len(k), 0, false)
			delete(next, string(k))
			deleted[string(k)] = true
		case p < 5 && m.useTTL:
			v, d := m.value(), m.ttl()
			t0 := time.Now()
			b.PutTTL(k, v, d)
			t1 := time.Now()
			total += segment.Size(len(k), len(v), true)
			next[string(k)] = &modelVal{val: v, expLo: t0.Add(d), expHi: t1.Add(d)}
			delete(deleted, string(k))
		default:
			v := m.value()
			b.Put(k, v)
			total += segment.Size(len(k), len(v), false)
			next[string(k)] = &modelVal{val: v}
			delete(deleted, string(k))
		}
	}
	require.Equal(m.t, n, b.Len())
	if int64(total+segment.HeaderSize) > m.opts.SegmentSize {
		// Too large for one segment: refused, and nothing is applied (the
		// following reads check that against the unchanged model).
		require.ErrorIs(m.t, m.db.Write(&b), ErrBatchTooLarge, m.ctx())
		m.tooLarge++
		return
	}
	require.NoError(m.t, m.db.Write(&b), m.ctx())
	for k := range deleted {
		delete(m.model, k)
	}
	for k, v := range next {
		m.model[k] = *v
	}
}

// expect checks the outcome of one point read of k against the model.
func (m *modelRun) expect(k []byte, t0, t1 time.Time, found bool, got []byte, what string) {
	mv, ok := m.model[string(k)]
	ctx := fmt.Sprintf("%s: %s of key %x", m.ctx(), what, k)
	if !ok {
		require.False(m.t, found, "%s: absent in model but found", ctx)
		return
	}
	alive, expired := mv.state(t0, t1)
	switch {
	case alive:
		require.True(m.t, found, "%s: present in model but not found", ctx)
	case expired:
		require.False(m.t, found, "%s: expired in model but found", ctx)
	}
	if found && got != nil {
		require.True(m.t, bytes.Equal(mv.val, got), "%s: value mismatch: got %d bytes, want %d", ctx, len(got), len(mv.val))
	}
}

func (m *modelRun) checkGet() { m.checkGetKey(m.key()) }

func (m *modelRun) checkGetKey(k []byte) {
	t0 := time.Now()
	v, err := m.db.Get(k)
	t1 := time.Now()
	if err != nil {
		require.ErrorIs(m.t, err, ErrNotFound, m.ctx())
		require.Nil(m.t, v)
	}
	if v == nil {
		v = []byte{} // distinguish "found, empty" from "not checked"
	}
	m.expect(k, t0, t1, err == nil, v, "Get")
}

func (m *modelRun) checkHas() {
	k := m.key()
	t0 := time.Now()
	ok, err := m.db.Has(k)
	t1 := time.Now()
	require.NoError(m.t, err, m.ctx())
	m.expect(k, t0, t1, ok, nil, "Has")
}

func (m *modelRun) checkAppend() {
	k := m.key()
	prefix := []byte("prefix:")
	dst := make([]byte, len(prefix), len(prefix)+m.rnd.IntN(400))
	copy(dst, prefix)
	t0 := time.Now()
	out, err := m.db.AppendValue(dst, k)
	t1 := time.Now()
	if err != nil {
		require.ErrorIs(m.t, err, ErrNotFound, m.ctx())
		require.Equal(m.t, prefix, out, "%s: AppendValue changed dst on error", m.ctx())
		m.expect(k, t0, t1, false, nil, "AppendValue")
		return
	}
	require.True(m.t, bytes.HasPrefix(out, prefix), "%s: AppendValue lost dst", m.ctx())
	m.expect(k, t0, t1, true, append([]byte{}, out[len(prefix):]...), "AppendValue")
}

func (m *modelRun) checkView() {
	k := m.key()
	var got []byte
	called := false
	t0 := time.Now()
	err := m.db.View(k, func(v []byte) error {
		called = true
		got = append([]byte{}, v...)
		return nil
	})
	t1 := time.Now()
	if err != nil {
		require.ErrorIs(m.t, err, ErrNotFound, m.ctx())
		require.False(m.t, called, "%s: View called fn for an absent key", m.ctx())
	} else {
		require.True(m.t, called, "%s: View returned nil without calling fn", m.ctx())
	}
	m.expect(k, t0, t1, err == nil, got, "View")
}

func (m *modelRun) checkForEach() {
	got := map[string][]byte{}
	t0 := time.Now()
	err := m.db.ForEach(func(k, v []byte) error {
		if _, dup := got[string(k)]; dup {
			return fmt.Errorf("duplicate key %x", k)
		}
		got[string(k)] = append([]byte{}, v...)
		return nil
	})
	t1 := time.Now()
	require.NoError(m.t, err, m.ctx())
	for k, mv := range m.model {
		v, ok := got[k]
		alive, expired := mv.state(t0, t1)
		switch {
		case alive:
			require.True(m.t, ok, "%s: ForEach missed key %x", m.ctx(), k)
		case expired:
			require.False(m.t, ok, "%s: ForEach yielded expired key %x", m.ctx(), k)
		}
		if ok {
			require.True(m.t, bytes.Equal(mv.val, v), "%s: ForEach value of %x differs", m.ctx(), k)
		}
	}
	for k := range got {
		_, ok := m.model[k]
		require.True(m.t, ok, "%s: ForEach yielded key %x absent from the model", m.ctx(), k)
	}
	if !m.useTTL {
		require.Len(m.t, got, len(m.model), m.ctx())
	}
}

// checkStats checks the key count and the byte accounting. Every segment's
// bytes (its Size, which for the active one includes the write buffer) are
// its header plus live plus dead records, whenever nothing else writes (no
// background compaction). flushed says the write buffer is known to be
// empty (right after Open, Sync or Close), so the file sizes (DiskBytes)
// must account for everything too.
func (m *modelRun) checkStats(flushed bool) {
	st, err := m.db.Stats()
	require.NoError(m.t, err)
	var sure int64 // keys certainly not expired
	now := time.Now()
	for _, mv := range m.model {
		if alive, _ := mv.state(now, now); alive {
			sure++
		}
	}
	// Expired keys stay in the index until reclaimed, so with TTLs the
	// count lies between the keys certainly alive and all keys written.
	require.GreaterOrEqual(m.t, st.Keys, sure, "%s: Stats.Keys", m.ctx())
	require.LessOrEqual(m.t, st.Keys, int64(len(m.model)), "%s: Stats.Keys", m.ctx())
	if !m.useTTL {
		require.EqualValues(m.t, len(m.model), st.Keys, "%s: Stats.Keys", m.ctx())
	}
	if !m.quiet {
		return
	}
	var live, dead, size int64
	for _, s := range st.Segments {
		require.GreaterOrEqual(m.t, s.LiveBytes, int64(0), "%s: segment %+v", m.ctx(), s)
		require.GreaterOrEqual(m.t, s.DeadBytes, int64(0), "%s: segment %+v", m.ctx(), s)
		require.Equal(m.t, s.Size, segment.HeaderSize+s.LiveBytes+s.DeadBytes,
			"%s: segment bytes are not header+live+dead (flushed=%v): %+v", m.ctx(), flushed, s)
		live += s.LiveBytes
		dead += s.DeadBytes
		size += s.Size
	}
	require.Equal(m.t, live, st.LiveBytes, m.ctx())
	require.Equal(m.t, dead, st.DeadBytes, m.ctx())
	if flushed {
		require.Equal(m.t, size, st.DiskBytes, "%s: the write buffer should be empty", m.ctx())
		require.Equal(m.t, st.DiskBytes, st.LiveBytes+st.DeadBytes+segment.HeaderSize*int64(len(st.Segments)),
			"%s: LiveBytes+DeadBytes+headers != DiskBytes: %+v", m.ctx(), st.Segments)
	}
}

func (m *modelRun) reopen() {
	st, err := m.db.Stats()
	require.NoError(m.t, err)
	m.removed += st.SegmentsRemoved
	require.NoError(m.t, m.db.Close(), m.ctx())
	db := m.db
	m.db = nil
	_, err = db.Get(m.keys[0])
	require.ErrorIs(m.t, err, ErrClosed)
	m.db, err = Open(m.dir, m.opts)
	require.NoError(m.t, err, "%s: reopen", m.ctx())
	m.checkStats(true)
}

// checkAll reads every key of the key space and iterates once.
func (m *modelRun) checkAll() {
	for _, k := range m.keys {
		m.checkGetKey(k)
	}
	m.checkForEach()
	require.NoError(m.t, m.db.Sync())
	m.checkStats(true)
}
