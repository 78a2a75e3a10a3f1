package engine

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestLayersModelCrash runs random puts, deletes, TTL puts, clock steps,
// compactions, reopens and base rebuilds (Fold, and SetBase to a bundle
// built outside) on a database over a base bundle, against a model of the
// merged view. Every file operation of a delete, a fold, a switch, a
// compaction and a reopen is a crash point: a copy of the disk as a power
// loss there leaves it (vfs.MemFS.CrashClone) is opened and must show the
// model's view before the operation or after it (a fold, a switch, a
// compaction and a reopen change nothing, so exactly that one), through
// Get, Has and iteration; at some points the image then folds again and
// must still show it.
func TestLayersModelCrash(t *testing.T) {
	t.Parallel()
	steps := 90
	if testing.Short() || raceEnabled {
		steps = 45
	}
	for seed := range uint64(2) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { layersModel(t, seed, steps) })
	}
}

type lmVal struct {
	v   string
	exp int64 // Unix ms; 0: none
}

type lmModel map[string]lmVal

func (m lmModel) view(now int64) map[string]string {
	out := map[string]string{}
	for k, x := range m {
		if x.exp == 0 || x.exp > now {
			out[k] = x.v
		}
	}
	return out
}

// lmPoint is a crash image with the views it may show.
type lmPoint struct {
	img       *vfs.MemFS
	pre, post map[string]string
	what      string
	now       int64
}

func layersModel(t *testing.T, seed uint64, steps int) {
	rnd := rand.New(rand.NewPCG(seed, 77))
	mem := vfs.NewMem()
	clk := &testClock{}
	clk.ms.Store(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	const nkeys = 48
	key := func(i int) string { return fmt.Sprintf("key-%02d", i) }
	model := lmModel{}
	basePairs := map[string]string{}
	for i := range nkeys / 2 {
		basePairs[key(i)] = fmt.Sprintf("base-%d", i)
		model[key(i)] = lmVal{v: basePairs[key(i)]}
	}
	require.NoError(t, mem.MkdirAll("/ext", 0o755))
	buildBase(t, mem, "/ext/b0.bundle", basePairs)

	var points []lmPoint
	armed := false
	var pre, post map[string]string
	var what string
	inj := &crashInjector{at: func(k int64, op vfs.Op, name string) {
		if !armed {
			return
		}
		var r *rand.Rand
		if k%2 == 1 {
			r = rand.New(rand.NewPCG(seed, uint64(k)))
		}
		points = append(points, lmPoint{img: mem.CrashClone(r), pre: pre, post: post,
			what: fmt.Sprintf("%s: crash before op %d (%v %s)", what, k, op, name), now: clk.ms.Load()})
	}}
	fs := vfs.NewErrorFS(mem, inj)
	o := baseOpts(fs, clk)
	o.Base = "/ext/b0.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	o.Base = ""
	// arm makes the next operation's file operations crash points, with
	// the views before and after it.
	arm := func(w string, after lmModel) {
		now := clk.ms.Load()
		pre, post, what, armed = model.view(now), after.view(now), w, true
	}
	// masked are the keys whose last write was a delete while the base
	// held them: a base switched to may hold them (with stale values)
	// and must not show them. curBase is the current base's content.
	masked := map[string]bool{}
	curBase := maps.Clone(basePairs)
	extBuilds := 0
	for step := range steps {
		i := rnd.IntN(nkeys)
		k := key(i)
		switch p := rnd.IntN(100); {
		case p < 35:
			v := fmt.Sprintf("v%d-%d", step, rnd.IntN(1000))
			require.NoError(t, db.Put([]byte(k), []byte(v)))
			model[k] = lmVal{v: v}
			delete(masked, k)
		case p < 55:
			after := maps.Clone(model)
			delete(after, k)
			arm(fmt.Sprintf("step %d: delete %s", step, k), after)
			require.NoError(t, db.Delete([]byte(k)))
			armed = false
			model = after
			_, inBase := curBase[k]
			if inBase {
				masked[k] = true
			} else {
				delete(masked, k)
			}
		case p < 65:
			v := fmt.Sprintf("ttl%d", step)
			ttl := time.Duration(1+rnd.IntN(3)) * time.Second
			require.NoError(t, db.PutTTL([]byte(k), []byte(v), ttl))
			model[k] = lmVal{v: v, exp: clk.ms.Load() + ttl.Milliseconds()}
			delete(masked, k)
		case p < 72:
			clk.add(time.Duration(rnd.IntN(2500)) * time.Millisecond)
		case p < 82:
			arm(fmt.Sprintf("step %d: fold", step), model)
			curBase = mergedViewNoTTL(t, db)
			_, err := db.Fold(nil)
			armed = false
			require.NoError(t, err, "step %d: fold", step)
			clear(masked)
		case p < 86:
			// A base built elsewhere from the merged view, then switched to.
			extBuilds++
			path := fmt.Sprintf("/ext/x%d.bundle", extBuilds)
			// It also holds stale values of the masked keys, which their
			// masks must go on hiding.
			curBase = mergedViewNoTTL(t, db)
			for k := range masked {
				curBase[k] = "stale"
			}
			buildBase(t, mem, path, curBase)
			arm(fmt.Sprintf("step %d: set base %s", step, path), model)
			_, err := db.SetBase(path)
			armed = false
			require.NoError(t, err, "step %d: set base", step)
		case p < 92:
			arm(fmt.Sprintf("step %d: compact", step), model)
			require.NoError(t, db.Compact())
			armed = false
		default:
			arm(fmt.Sprintf("step %d: reopen", step), model)
			require.NoError(t, db.Close())
			db, err = Open("/db", o)
			armed = false
			require.NoError(t, err, "step %d: reopen", step)
		}
		require.Equal(t, model.view(clk.ms.Load()), mergedView(t, db), "step %d", step)
	}
	require.NoError(t, db.Close())
	rep, err := Verify("/db", &Options{FS: mem, Clock: clk.now})
	require.NoError(t, err)
	require.True(t, rep.OK(), "verify: %v", rep.Problems)

	for n, p := range points {
		checkLayersImage(t, p, n%4 == 0)
	}
	t.Logf("seed %d: %d steps, %d crash images checked", seed, steps, len(points))
}

// mergedViewNoTTL is the merged view without the pairs that have a TTL:
// what a fold puts in a bundle.
func mergedViewNoTTL(t *testing.T, db *DB) map[string]string {
	out := map[string]string{}
	it := db.NewIterator()
	defer it.Close()
	for it.Next() {
		if it.Item().Expiry.IsZero() {
			out[string(it.Key())] = string(it.Value())
		}
	}
	require.NoError(t, it.Err())
	return out
}

func checkLayersImage(t *testing.T, p lmPoint, refold bool) {
	t.Helper()
	clk := &testClock{}
	clk.ms.Store(p.now)
	o := baseOpts(p.img, clk)
	db, err := Open("/db", o)
	require.NoError(t, err, "%s: open", p.what)
	defer db.Close()
	got := mergedView(t, db)
	if !maps.Equal(got, p.pre) && !maps.Equal(got, p.post) {
		require.Equal(t, p.post, got, "%s: the view is neither the one before (%v) nor after", p.what, slices.Sorted(maps.Keys(p.pre)))
	}
	for k, v := range got {
		b, err := db.Get([]byte(k))
		require.NoError(t, err, "%s: get %s", p.what, k)
		require.Equal(t, v, string(b), "%s: get %s", p.what, k)
	}
	for _, k := range slices.Collect(maps.Keys(p.pre)) {
		if _, ok := got[k]; !ok {
			has, err := db.Has([]byte(k))
			require.NoError(t, err)
			require.False(t, has, "%s: has %s", p.what, k)
		}
	}
	if refold {
		_, err := db.Fold(nil)
		require.NoError(t, err, "%s: fold after the crash", p.what)
		require.Equal(t, got, mergedView(t, db), "%s: fold after the crash", p.what)
		require.NoError(t, db.Close())
		db, err = Open("/db", o)
		require.NoError(t, err, "%s: reopen after the fold", p.what)
		require.Equal(t, got, mergedView(t, db), "%s: reopen after the fold", p.what)
	}
}
