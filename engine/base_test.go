package engine

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/vfs"
)

// buildBase writes a bundle of pairs at path.
func buildBase(t *testing.T, fs vfs.FS, path string, pairs map[string]string) {
	t.Helper()
	b, err := bundle.NewBuilder(fs, path, &bundle.BuildOptions{Seed: 7})
	require.NoError(t, err)
	for _, k := range slices.Sorted(maps.Keys(pairs)) {
		require.NoError(t, b.Add([]byte(k), []byte(pairs[k])))
	}
	require.NoError(t, b.Finish())
}

// mergedView reads every pair through iteration and checks that Get and
// Has agree with it for the keys of want and of extra.
func mergedView(t *testing.T, db *DB) map[string]string {
	t.Helper()
	got := map[string]string{}
	var err error
	for k, v := range db.All(&err) {
		_, dup := got[string(k)]
		require.False(t, dup, "key %q yielded twice", k)
		got[string(k)] = string(v)
	}
	require.NoError(t, err)
	return got
}

// requireView checks that db shows exactly want, through iteration, Get
// and Has, and that the keys of absent read as absent.
func requireView(t *testing.T, db *DB, want map[string]string, absent ...string) {
	t.Helper()
	require.Equal(t, want, mergedView(t, db))
	for k, v := range want {
		got, err := db.Get([]byte(k))
		require.NoError(t, err, "get %q", k)
		require.Equal(t, v, string(got), "get %q", k)
	}
	for _, k := range absent {
		_, err := db.Get([]byte(k))
		require.ErrorIs(t, err, ErrNotFound, "get %q", k)
		ok, err := db.Has([]byte(k))
		require.NoError(t, err)
		require.False(t, ok, "has %q", k)
	}
}

// openOverBase opens /db over a base bundle /b.bundle of pairs, built on
// fs.
func openOverBase(t *testing.T, fs vfs.FS, pairs map[string]string) *DB {
	t.Helper()
	buildBase(t, fs, "/b.bundle", pairs)
	o := baseOpts(fs, nil)
	o.Base = "/b.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	return db
}

type testClock struct{ ms atomic.Int64 }

func (c *testClock) now() time.Time      { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) add(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func baseOpts(fs vfs.FS, clk *testClock) *Options {
	o := &Options{FS: fs, SegmentSize: 16 << 10, Sync: SyncAlways, CompactionThreshold: -1, Logger: slog.New(slog.DiscardHandler)}
	if clk != nil {
		o.Clock = clk.now
	}
	return o
}

func TestBaseReadThroughAndMasks(t *testing.T) {
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll("/data", 0o755))
	buildBase(t, fs, "/data/base.bundle", map[string]string{"a": "1", "b": "2", "c": "3"})
	clk := &testClock{}
	clk.ms.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	o := baseOpts(fs, clk)
	o.Base = "/data/base.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	requireView(t, db, map[string]string{"a": "1", "b": "2", "c": "3"}, "z")

	require.NoError(t, db.Put([]byte("b"), []byte("20"))) // overrides the base
	require.NoError(t, db.Put([]byte("d"), []byte("4")))  // delta only
	require.NoError(t, db.Delete([]byte("a")))            // a mask hides the base's a
	require.NoError(t, db.Delete([]byte("zz")))           // absent everywhere: nothing
	require.NoError(t, db.PutTTL([]byte("c"), []byte("30"), time.Second))
	want := map[string]string{"b": "20", "c": "30", "d": "4"}
	requireView(t, db, want, "a", "zz")

	// The TTL runs out: c is gone, not back to the base's 3, through the
	// expirer, compaction and a reopen.
	clk.add(2 * time.Second)
	delete(want, "c")
	requireView(t, db, want, "a", "c")
	db.expirePass(map[*segFile]*expiryCursor{}, 1000)
	require.NoError(t, db.Compact())
	requireView(t, db, want, "a", "c")
	// A delete of a delta-only key writes a tombstone; d is gone for good.
	require.NoError(t, db.Delete([]byte("d")))
	delete(want, "d")
	requireView(t, db, want, "a", "c", "d")
	require.NoError(t, db.Close())

	// The BASE file names the base: Open finds it without the option.
	o.Base = ""
	db, err = Open("/db", o)
	require.NoError(t, err)
	require.Equal(t, "/data/base.bundle", db.Base().Path)
	requireView(t, db, want, "a", "c", "d")
	require.NoError(t, db.Close())

	// Without snapshots (a full replay) the masks stay too.
	o.DisableSnapshots = true
	db, err = Open("/db", o)
	require.NoError(t, err)
	requireView(t, db, want, "a", "c", "d")
	require.NoError(t, db.Close())

	// Another base than the recorded one is refused.
	buildBase(t, fs, "/data/other.bundle", map[string]string{"x": "1"})
	o.Base = "/data/other.bundle"
	_, err = Open("/db", o)
	require.ErrorIs(t, err, ErrBadOptions)
	require.ErrorContains(t, err, "base.bundle")
}

func TestBaseRefusesApproximate(t *testing.T) {
	fs := vfs.NewMem()
	b, err := bundle.NewBuilder(fs, "/a.bundle", &bundle.BuildOptions{Approximate: true})
	require.NoError(t, err)
	require.NoError(t, b.Add([]byte("k"), []byte("v")))
	require.NoError(t, b.Finish())
	o := baseOpts(fs, nil)
	o.Base = "/a.bundle"
	_, err = Open("/db", o)
	require.ErrorIs(t, err, ErrBadOptions)
	require.ErrorContains(t, err, "approximate")
	_, err = fs.Stat("/db/" + BaseFileName)
	require.Error(t, err, "no BASE file is left for a base that was refused")
}

func TestBaseFileDamaged(t *testing.T) {
	fs := vfs.NewMem()
	buildBase(t, fs, "/b.bundle", map[string]string{"k": "v"})
	o := baseOpts(fs, nil)
	o.Base = "/b.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	raw := readFile(t, fs, "/db/"+BaseFileName)
	for i := range raw {
		bad := slices.Clone(raw)
		bad[i] ^= 0x20
		writeFile(t, fs, "/db/"+BaseFileName, bad)
		_, err := Open("/db", &Options{FS: fs})
		require.ErrorIs(t, err, ErrCorrupt, "byte %d flipped", i)
	}
	writeFile(t, fs, "/db/"+BaseFileName, raw)
	require.NoError(t, fs.Remove("/b.bundle"))
	_, err = Open("/db", &Options{FS: fs})
	require.Error(t, err)
	require.ErrorContains(t, err, "b.bundle")
}

func TestFold(t *testing.T) {
	fs := vfs.NewMem()
	buildBase(t, fs, "/b1.bundle", map[string]string{"a": "1", "b": "2", "c": "3", "e": "5"})
	clk := &testClock{}
	clk.ms.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	o := baseOpts(fs, clk)
	o.Base = "/b1.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("b"), []byte("20")))
	require.NoError(t, db.Put([]byte("d"), []byte("4")))
	require.NoError(t, db.Delete([]byte("a")))
	require.NoError(t, db.PutTTL([]byte("e"), []byte("50"), time.Hour))
	for i := range 300 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "n%03d", i), []byte("v")))
	}
	want := mergedView(t, db)

	st, err := db.Fold(nil)
	require.NoError(t, err)
	require.Equal(t, "/db", filepath.Dir(st.Path))
	require.EqualValues(t, len(want)-1, st.Pairs, "all but the TTL key e are in the new base")
	// Dropped: b, d and the 300 n keys (same as the base now) and a's mask
	// (the new base lacks a); e stays, with its TTL.
	require.EqualValues(t, 303, st.Dropped)
	requireView(t, db, want, "a")
	exp, err := db.Expiry([]byte("e"))
	require.NoError(t, err)
	require.False(t, exp.IsZero(), "e keeps its TTL in the delta")
	require.NoError(t, db.Close())

	db, err = Open("/db", &Options{FS: fs, Clock: clk.now})
	require.NoError(t, err)
	require.Equal(t, st.Path, db.Base().Path)
	requireView(t, db, want, "a")
	// A second fold replaces the fold-made base and deletes its file.
	require.NoError(t, db.Delete([]byte("b")))
	delete(want, "b")
	st2, err := db.Fold(nil)
	require.NoError(t, err)
	requireView(t, db, want, "a", "b")
	_, err = fs.Stat(st.Path)
	require.ErrorIs(t, err, iofs.ErrNotExist, "the replaced fold output is deleted")
	_, err = fs.Stat("/b1.bundle")
	require.NoError(t, err, "a base the user gave is never deleted")
	require.NoError(t, db.Close())
	db, err = Open("/db", &Options{FS: fs, Clock: clk.now})
	require.NoError(t, err)
	require.Equal(t, st2.Path, db.Base().Path)
	requireView(t, db, want, "a", "b")
	require.NoError(t, db.Close())
}

// TestFoldWithoutBase: a database with no base folds into its first one.
// With SyncNone the delta's records are still in the write buffer when
// the fold switches; they are dropped all the same.
func TestFoldWithoutBase(t *testing.T) {
	for _, sm := range []SyncMode{SyncAlways, SyncNone} {
		t.Run(sm.String(), func(t *testing.T) { foldWithoutBase(t, sm) })
	}
}

func foldWithoutBase(t *testing.T, sm SyncMode) {
	fs := vfs.NewMem()
	o := baseOpts(fs, nil)
	o.Sync = sm
	db, err := Open("/db", o)
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)))
	}
	want := mergedView(t, db)
	require.NoError(t, fs.MkdirAll("/shared", 0o755))
	st, err := db.Fold(&FoldOptions{Path: "/shared/first.bundle"})
	require.NoError(t, err)
	require.EqualValues(t, 100, st.Pairs)
	require.EqualValues(t, 100, st.Dropped)
	stats, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, stats.Keys, "the delta is empty after the fold")
	requireView(t, db, want)
	require.NoError(t, db.Close())
}

// TestIteratorStopsOnBaseSwitch: a walk that straddles a switch ends with
// ErrBaseChanged instead of mixing the old base with a delta that dropped
// what the new one holds.
func TestIteratorStopsOnBaseSwitch(t *testing.T) {
	fs := vfs.NewMem()
	db := openOverBase(t, fs, map[string]string{"a": "1", "b": "2"})
	defer db.Close()
	require.NoError(t, db.Put([]byte("c"), []byte("3")))
	it := db.NewIterator()
	require.True(t, it.Next())
	_, err := db.Fold(nil)
	require.NoError(t, err)
	for it.Next() {
	}
	require.ErrorIs(t, it.Err(), ErrBaseChanged)
}

// TestBaseTxnAndUpdate: transactions and Update read through to the base
// and their deletes mask it.
func TestBaseTxnAndUpdate(t *testing.T) {
	fs := vfs.NewMem()
	db := openOverBase(t, fs, map[string]string{"a": "1", "b": "2", "c": "3"})
	defer db.Close()
	_, err := db.Txn(func(tx *Tx) error {
		v, _, found, err := tx.Get([]byte("a"))
		if err != nil || !found || string(v) != "1" {
			return fmt.Errorf("tx.Get(a) = %q %v %v", v, found, err)
		}
		if err := tx.Delete([]byte("a")); err != nil {
			return err
		}
		return tx.Put([]byte("b"), append(v, '!'), time.Time{})
	})
	require.NoError(t, err)
	_, err = db.Update([]byte("c"), func(v []byte, _ Item, found bool, _ uint64) (Change, error) {
		if !found || string(v) != "3" {
			return Change{}, errors.New("update did not see the base's c")
		}
		return Change{Op: Remove}, nil
	})
	require.NoError(t, err)
	var b Batch
	b.Delete([]byte("b"))
	b.Put([]byte("d"), []byte("4"))
	require.NoError(t, db.Write(&b))
	requireView(t, db, map[string]string{"d": "4"}, "a", "b", "c")
}

// TestDeletesDuringFold: keys deleted while a fold reads the merged view
// stay deleted after the switch, though the fold may have copied them
// into the new base (every delete during a fold is a mask).
func TestDeletesDuringFold(t *testing.T) {
	fs := vfs.NewMem()
	buildBase(t, fs, "/b.bundle", map[string]string{"base": "1"})
	o := baseOpts(fs, nil)
	o.Base = "/b.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	want := map[string]string{"base": "1"}
	var keys []string
	for i := range 50 {
		k := fmt.Sprintf("d%02d", i)
		keys = append(keys, k)
		require.NoError(t, db.Put([]byte(k), []byte("v")))
	}
	added := 0
	db.foldAddHook = func() {
		added++
		if added == 25 {
			// Half the keys are in the new bundle already; delete them all
			// (in the background writer's way: another goroutine).
			done := make(chan error)
			go func() {
				for _, k := range keys {
					if err := db.Delete([]byte(k)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			require.NoError(t, <-done)
		}
	}
	_, err = db.Fold(nil)
	require.NoError(t, err)
	require.GreaterOrEqual(t, added, 25, "the deletes ran during the fold")
	requireView(t, db, want, keys...)
	require.NoError(t, db.Close())
	db, err = Open("/db", baseOpts(fs, nil))
	require.NoError(t, err)
	requireView(t, db, want, keys...)
	require.NoError(t, db.Close())
}

// TestCheckpointWithBase: a checkpoint opens to the same merged view,
// with a fold-made base (copied or linked into it) or one elsewhere
// (named by path).
func TestCheckpointWithBase(t *testing.T) {
	fs := vfs.NewMem()
	db := openOverBase(t, fs, map[string]string{"a": "1", "b": "2"})
	defer db.Close()
	require.NoError(t, db.Delete([]byte("a")))
	require.NoError(t, db.Put([]byte("c"), []byte("3")))
	want := map[string]string{"b": "2", "c": "3"}
	check := func(dir string, copyFiles bool) {
		_, err := db.CheckpointWith(dir, CheckpointOptions{Copy: copyFiles})
		require.NoError(t, err)
		cp, err := Open(dir, baseOpts(fs, nil))
		require.NoError(t, err)
		requireView(t, cp, want, "a")
		require.NoError(t, cp.Close())
	}
	check("/cp1", false) // the base lies outside: named by path
	require.NoError(t, db.Put([]byte("d"), []byte("4")))
	want["d"] = "4"
	_, err := db.Fold(nil)
	require.NoError(t, err)
	check("/cp2", false)
	check("/cp3", true)
	// The checkpoint's base is its own file: a later fold of the database
	// deletes the old base, and the checkpoint still reads.
	require.NoError(t, db.Put([]byte("e"), []byte("5")))
	_, err = db.Fold(nil)
	require.NoError(t, err)
	cp, err := Open("/cp3", baseOpts(fs, nil))
	require.NoError(t, err)
	requireView(t, cp, map[string]string{"b": "2", "c": "3", "d": "4"}, "a", "e")
	require.NoError(t, cp.Close())
}

// TestVerifyChecksBase: Verify checks the whole base bundle, and a
// damaged one is a problem it reports, not a crash or a silent pass.
func TestVerifyChecksBase(t *testing.T) {
	fs := vfs.NewMem()
	pairs := map[string]string{}
	for i := range 200 {
		pairs[fmt.Sprintf("k%03d", i)] = fmt.Sprintf("value-%d", i)
	}
	buildBase(t, fs, "/b.bundle", pairs)
	o := baseOpts(fs, nil)
	o.Base = "/b.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("x"), []byte("y")))
	require.NoError(t, db.Close())
	rep, err := Verify("/db", &Options{FS: fs})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)
	require.Equal(t, "/b.bundle", rep.Base)

	raw := readFile(t, fs, "/b.bundle")
	bad := slices.Clone(raw)
	bad[100] ^= 1 // in the data section: a record's CRC fails
	writeFile(t, fs, "/b.bundle", bad)
	rep, err = Verify("/db", &Options{FS: fs})
	require.NoError(t, err)
	require.False(t, rep.OK())
	require.Contains(t, rep.Problems[0].What, "base bundle")
}

// TestBaseItemVersion: a base pair reads with Item.Base and the base's
// sequence number, older than every write since the switch and the same
// after a reopen; a new base gets a newer one.
func TestBaseItemVersion(t *testing.T) {
	fs := vfs.NewMem()
	buildBase(t, fs, "/b.bundle", map[string]string{"a": "1"})
	db, err := Open("/db", baseOpts(fs, nil))
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("x"), []byte("1"))) // a database with data gets a base
	require.NoError(t, db.Close())
	o := baseOpts(fs, nil)
	o.Base = "/b.bundle"
	db, err = Open("/db", o)
	require.NoError(t, err)
	_, it, err := db.AppendItem(nil, []byte("a"))
	require.NoError(t, err)
	require.True(t, it.Base)
	_, itx, err := db.AppendItem(nil, []byte("x"))
	require.NoError(t, err)
	require.False(t, itx.Base)
	require.Greater(t, it.Seq, itx.Seq, "the base came after x's write")
	require.Equal(t, db.Base().Seq, it.Seq)
	require.NoError(t, db.Put([]byte("y"), []byte("2")))
	_, ity, err := db.AppendItem(nil, []byte("y"))
	require.NoError(t, err)
	seq := ity.Seq
	require.Greater(t, seq, it.Seq, "a write after the switch is newer than the base")
	require.NoError(t, db.Close())
	db, err = Open("/db", baseOpts(fs, nil))
	require.NoError(t, err)
	_, it2, err := db.AppendItem(nil, []byte("a"))
	require.NoError(t, err)
	require.Equal(t, it.Seq, it2.Seq, "the base's number is recorded")
	_, err = db.Fold(nil)
	require.NoError(t, err)
	_, it3, err := db.AppendItem(nil, []byte("a"))
	require.NoError(t, err)
	require.Greater(t, it3.Seq, seq)
	require.NoError(t, db.Close())
}

// TestBaseReadFault: a base bundle truncated underneath its mapping makes
// reads of its pairs errors (ErrIO), not crashes; the delta still reads.
func TestBaseReadFault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "base.bundle")
	pairs := map[string]string{}
	for i := range 5000 {
		pairs[fmt.Sprintf("key-%05d", i)] = strings.Repeat("v", 200)
	}
	buildBase(t, vfs.Default, path, pairs)
	db, err := Open(filepath.Join(dir, "db"), &Options{Base: path, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("delta"), []byte("d")))
	require.NoError(t, os.Truncate(path, 4096))
	failed := 0
	for k := range pairs {
		_, err := db.Get([]byte(k))
		if err != nil {
			require.ErrorIs(t, err, ErrIO, "key %s", k)
			failed++
		}
	}
	require.Positive(t, failed, "reads past the truncation fail")
	v, err := db.Get([]byte("delta"))
	require.NoError(t, err)
	require.Equal(t, "d", string(v))
	var iterErr error
	for range db.All(&iterErr) {
	}
	require.ErrorIs(t, iterErr, ErrIO) // the walk of the base reports the pair it could not read
}

func TestOwnedBase(t *testing.T) {
	require.True(t, ownedBase("base-00000000000000ff.bundle"))
	for _, n := range []string{"base-ff.bundle", "base-mine.bundle", "base-000000000000000g.bundle",
		"/db/base-00000000000000ff.bundle", "products.bundle", "base-00000000000000ff.bundle.tmp"} {
		require.False(t, ownedBase(n), n)
	}
}

// TestFoldConcurrent: readers and writers run while folds and compactions
// switch bases under them. A key is never absent (none is deleted) and a
// reader never sees a key's version go back; every fold succeeds, and the
// final view after a reopen holds every key's last write.
func TestFoldConcurrent(t *testing.T) {
	fs := vfs.NewMem()
	const nkeys = 64
	// Round r's writes start when fold r does, so every fold has writes
	// beside it, however fast either side runs.
	const folds, perRound = 6, 400
	var round atomic.Int64
	round.Store(-1)
	pairs := map[string]string{}
	for i := range nkeys {
		pairs[fmt.Sprintf("k%02d", i)] = "0"
	}
	buildBase(t, fs, "/b.bundle", pairs)
	o := baseOpts(fs, nil)
	o.Sync, o.SegmentSize = SyncNone, 1<<20
	o.Base = "/b.bundle"
	db, err := Open("/db", o)
	require.NoError(t, err)
	var last [nkeys]atomic.Int64 // the newest version written per key
	errs := make(chan error, 8)
	var writers, readers sync.WaitGroup
	for w := range 2 {
		writers.Go(func() {
			// Writer w owns the keys i with i%2 == w, so a key's versions
			// only grow.
			n := 0
			for r := range int64(folds) {
				for round.Load() < r {
					time.Sleep(50 * time.Microsecond)
				}
				for range perRound {
					n++
					i := (n*2 + w) % nkeys
					if err := db.Put(fmt.Appendf(nil, "k%02d", i), fmt.Appendf(nil, "%d", n)); err != nil {
						errs <- err
						return
					}
					last[i].Store(int64(n))
				}
			}
		})
	}
	done := make(chan struct{})
	for range 2 {
		readers.Go(func() {
			var seen [nkeys]int64
			for {
				select {
				case <-done:
					return
				default:
				}
				for i := range nkeys {
					v, err := db.Get(fmt.Appendf(nil, "k%02d", i))
					if err != nil {
						errs <- fmt.Errorf("k%02d: %w", i, err)
						return
					}
					var n int64
					if _, err := fmt.Sscan(string(v), &n); err != nil {
						errs <- fmt.Errorf("k%02d: value %q", i, v)
						return
					}
					if n < seen[i] {
						errs <- fmt.Errorf("k%02d went back from version %d to %d", i, seen[i], n)
						return
					}
					seen[i] = n
				}
			}
		})
	}
	for f := range int64(folds) {
		round.Store(f)
		_, err := db.Fold(nil)
		require.NoError(t, err)
		require.NoError(t, db.Compact())
	}
	writers.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, db.Close())
	db, err = Open("/db", baseOpts(fs, nil))
	require.NoError(t, err)
	defer db.Close()
	for i := range nkeys {
		v, err := db.Get(fmt.Appendf(nil, "k%02d", i))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(last[i].Load()), string(v), "k%02d", i)
	}
}
