package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

func smallConfig(t *testing.T, workload string) Config {
	return Config{
		Dir: t.TempDir(), Keys: 2000, Ops: 2000, Goroutines: 2, BatchSize: 100,
		KeyMin: 12, KeyMax: 40, ValueMin: 0, ValueMax: 200,
		Workload: workload, Dist: "scrambled", Mix: Mix{50, 30, 20},
		Sync: engine.SyncNone, Segment: 256 << 10, Seed: 1, Verify: true,
	}
}

// checkDB opens the directory independently of the runner and checks that
// it holds exactly want records, each a key of its id with a value of its
// own, with ids below limit.
func checkDB(t *testing.T, dir string, want int64, limit uint64, keyMin, keyMax int) {
	t.Helper()
	db, err := engine.Open(dir, &engine.Options{ReadOnly: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer db.Close()
	var n int64
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		n++
		id := IDOfKey(k)
		require.Less(t, id, limit)
		require.Equal(t, Key(nil, id, KeySize(id, keyMin, keyMax)), k)
		require.True(t, CheckValue(v, id), "record %d", id)
		return nil
	}))
	require.Equal(t, want, n)
}

func TestRunEveryWorkload(t *testing.T) {
	for _, w := range Workloads {
		t.Run(w.Name, func(t *testing.T) {
			c := smallConfig(t, w.Name)
			if w.Name == "fill" || w.Name == "expire" || w.Name == "evict" {
				// These have runners of their own (TestRunFillSmall,
				// TestRunSpikeSmall); Run must refuse them, saying so.
				_, err := Run(c)
				require.ErrorContains(t, err, "Run")
				require.ErrorContains(t, err, w.Name)
				return
			}
			if w.Name == "iterate" {
				c.Ops = 10
			}
			if w.Name == "a" {
				c.Sync = engine.SyncGroup
			}
			rep, err := Run(c)
			require.NoError(t, err)
			require.Zero(t, rep.Errors, rep.Wrong)
			require.True(t, rep.Verified)
			require.Equal(t, c.Dir, rep.Dir)

			load := rep.Phase("load")
			require.NotNil(t, load)
			require.Equal(t, int64(2000), load.Ops)
			require.Equal(t, int64(20), load.Latency["batch"].Count, "2000 keys in batches of 100")
			verify := rep.Phase("verify")
			require.NotNil(t, verify)
			run := rep.Phase("run " + w.Name)
			wantPhases := 3
			if w.Name == "load" {
				require.Nil(t, run)
				wantPhases = 2
			} else {
				require.NotNil(t, run)
				require.Positive(t, run.OpsPerSec)
			}
			require.Len(t, rep.Phases, wantPhases)

			lat := func(kind string) int64 { return run.Latency[kind].Count }
			limit := uint64(2000)
			switch w.Name {
			case "a", "b", "f":
				second := map[string]string{"a": "update", "b": "update", "f": "rmw"}[w.Name]
				require.Equal(t, int64(2000), lat("read")+lat(second))
				require.Positive(t, lat(second))
				require.Zero(t, lat("miss"))
				require.Equal(t, int64(2000), run.Ops)
			case "c":
				require.Equal(t, int64(2000), lat("read"))
				require.Len(t, run.Latency, 1)
			case "d":
				inserts := lat("insert")
				require.Positive(t, inserts)
				require.Equal(t, int64(2000), lat("read")+lat("miss")+inserts)
				require.Equal(t, 2000+inserts, rep.ExpectedKeys)
				require.Equal(t, "latest", rep.Dist)
				limit += uint64(inserts)
			case "miss":
				require.Equal(t, int64(2000), lat("miss"))
				require.Len(t, run.Latency, 1)
			case "iterate":
				require.Equal(t, int64(10), lat("scan"))
				require.Equal(t, int64(10*2000), run.Ops, "ops count the pairs visited")
			case "mixed":
				deletes := lat("delete")
				require.Positive(t, deletes)
				require.Positive(t, lat("miss"), "reads of deleted keys")
				require.Equal(t, int64(2000), lat("read")+lat("miss")+lat("update")+deletes)
				require.Less(t, rep.ExpectedKeys, int64(2000))
				require.Equal(t, "50:30:20", rep.Mix)
				require.Positive(t, verify.Latency["miss"].Count)
			}
			if w.Name != "d" && w.Name != "mixed" {
				require.Equal(t, int64(2000), rep.ExpectedKeys)
			}
			require.Equal(t, rep.ExpectedKeys, rep.KeysInDB)
			require.Equal(t, rep.ExpectedKeys, verify.Ops-verify.Latency["miss"].Count)
			require.Positive(t, rep.DiskBytes)
			require.Greater(t, rep.Segments, 1, "small segments roll")
			require.Positive(t, rep.UserBytes)
			require.GreaterOrEqual(t, rep.WriteAmp, 1.0)
			require.Positive(t, rep.RestartSecs)
			checkDB(t, c.Dir, rep.ExpectedKeys, limit, c.KeyMin, c.KeyMax)
		})
	}
}

func TestRunForDuration(t *testing.T) {
	c := smallConfig(t, "c")
	c.Ops, c.Duration, c.Verify = 0, 300*time.Millisecond, false
	var progress bytes.Buffer
	c.Progress = &progress
	rep, err := Run(c)
	require.NoError(t, err)
	run := rep.Phase("run c")
	require.NotNil(t, run)
	require.Positive(t, run.Ops)
	require.InDelta(t, 0.3, run.Seconds, 0.25)
	require.Equal(t, 0.3, rep.Duration)
	require.False(t, rep.Verified)
}

func TestRunSeedReproducible(t *testing.T) {
	counts := func(seed uint64) map[string]int64 {
		c := smallConfig(t, "mixed")
		c.Goroutines, c.Seed, c.Verify = 1, seed, false
		rep, err := Run(c)
		require.NoError(t, err)
		m := map[string]int64{"keys": rep.KeysInDB, "bytes": rep.UserBytes}
		for k, l := range rep.Phase("run mixed").Latency {
			m[k] = l.Count
		}
		return m
	}
	a := counts(7)
	require.Equal(t, a, counts(7))
	require.NotEqual(t, a, counts(8))
}

func TestRunTempDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	c := smallConfig(t, "load")
	c.Dir = ""
	rep, err := Run(c)
	require.NoError(t, err)
	require.Empty(t, rep.Dir)
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Empty(t, left, "the temp dir is removed")

	c.Keep = true
	rep, err = Run(c)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rep.Dir, filepath.Join(tmp, "marlin-bench-")), rep.Dir)
	require.DirExists(t, rep.Dir)
}

func TestRunBadConfig(t *testing.T) {
	c := smallConfig(t, "nope")
	_, err := Run(c)
	require.Error(t, err)
}

// openRunner opens dir and returns a runner over it, as Run would after a
// load of keys records.
func openRunner(t *testing.T, c Config) *runner {
	t.Helper()
	require.NoError(t, c.normalize())
	db, err := engine.Open(c.Dir, engineOptions(c))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	r := &runner{cfg: c, db: db, rep: newReport(c)}
	r.inserted.Store(c.Keys)
	return r
}

func TestReadsCatchWrongAnswers(t *testing.T) {
	c := smallConfig(t, "c")
	c.Keys, c.Goroutines = 10, 1
	r := openRunner(t, c)
	w := r.newWorker(0)
	key := func(id uint64) []byte { return Key(nil, id, c.keySize(id)) }
	require.NoError(t, r.db.Put(key(1), Value(nil, 1, 3, 50)))
	require.NoError(t, r.db.Put(key(2), Value(nil, 3, 3, 50))) // id 3's value under id 2's key
	bad := Value(nil, 4, 3, 50)
	bad[40] ^= 1
	require.NoError(t, r.db.Put(key(4), bad))

	require.NoError(t, w.read(1, mustHit))
	require.NoError(t, w.read(5, mustMiss))
	require.NoError(t, w.read(5, mayMiss))
	require.NoError(t, w.read(1, mayMiss))
	require.Zero(t, r.errs.Load())

	require.NoError(t, w.read(2, mustHit)) // another key's value
	require.NoError(t, w.read(4, mustHit)) // a damaged value
	require.NoError(t, w.read(5, mustHit)) // absent
	require.NoError(t, w.read(1, mustMiss))
	require.NoError(t, w.rmw(2))
	require.Equal(t, int64(5), r.errs.Load())
	require.Len(t, r.rep.Wrong, 5)
	require.Contains(t, r.rep.Wrong[0], "read 2")
}

func TestVerifyCatchesDamage(t *testing.T) {
	c := smallConfig(t, "c")
	c.Ops = 10
	rep, err := Run(c)
	require.NoError(t, err)
	require.Zero(t, rep.Errors)

	r := openRunner(t, c)
	require.NoError(t, r.verify())
	require.Zero(t, r.errs.Load(), r.rep.Wrong)

	// A lost record, an extra one, and a value swapped between two keys.
	key := func(id uint64) []byte { return Key(nil, id, c.keySize(id)) }
	require.NoError(t, r.db.Delete(key(10)))
	require.NoError(t, r.db.Put(key(5000), Value(nil, 5000, 0, 8)))
	require.NoError(t, r.db.Put(key(11), Value(nil, 12, 0, 30)))
	require.NoError(t, r.verify())
	// read 10 (missing), read 11 (wrong value), the scan's 5000 (never
	// written) and 11 (wrong value); the pair count is right by accident.
	require.Equal(t, int64(4), r.errs.Load(), r.rep.Wrong)
}

func TestReportOutput(t *testing.T) {
	c := smallConfig(t, "mixed")
	rep, err := Run(c)
	require.NoError(t, err)
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"workload mixed (get:put:delete 50:30:20)", "scrambled distribution",
		"2,000 keys of 12..40 bytes", "values of 0..200 bytes", "run mixed", "p99.9", "delete",
		"RssAnon", "B/key", "write amplification", "restart", "verified"} {
		require.Contains(t, text.String(), want)
	}
	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, rep.Phases, back.Phases)
	require.Equal(t, rep.KeysInDB, back.KeysInDB)
	require.Equal(t, rep.WriteAmp, back.WriteAmp)
	require.Equal(t, uint64(1), back.Seed)

	rep.Errors, rep.Wrong = 2, []string{"read 7: not found"}
	text.Reset()
	rep.WriteText(&text)
	require.Contains(t, text.String(), "WRONG RESULTS   2\n  read 7: not found")
}

// TestRunRefusesNonEmptyDir: a run into a directory that holds data is
// refused (its data would make answers wrong) unless ReuseDir; so are
// the fill and spike runs, which start from an empty database.
func TestRunRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "something"), []byte("x"), 0o644))
	c := smallConfig(t, "c")
	c.Dir = dir
	_, err := Run(c)
	require.ErrorContains(t, err, "is not empty")
	require.ErrorContains(t, err, "--reuse-dir")
	fc := DefaultFillConfig()
	fc.Dir = dir
	_, err = RunFill(fc)
	require.ErrorContains(t, err, "is not empty")
	sc := DefaultSpikeConfig("expire")
	sc.Dir = dir
	_, err = RunSpike(sc)
	require.ErrorContains(t, err, "is not empty")

	c.Dir = filepath.Join(t.TempDir(), "new") // absent: fine
	rep, err := Run(c)
	require.NoError(t, err)
	require.Zero(t, rep.Errors)
}
