package engine

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/dchest/siphash"
	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

type kv struct{ k, v []byte }

// sliceSource yields pairs, then failAt's error (if failAt >= 0) instead
// of pair failAt.
type sliceSource struct {
	pairs  []kv
	i      int
	failAt int
}

var errSourceBroke = errors.New("source broke")

func (s *sliceSource) Next() ([]byte, []byte, error) {
	if s.i == s.failAt {
		return nil, nil, errSourceBroke
	}
	if s.i == len(s.pairs) {
		return nil, nil, io.EOF
	}
	p := s.pairs[s.i]
	s.i++
	return p.k, p.v, nil
}

func source(pairs []kv) *sliceSource { return &sliceSource{pairs: pairs, failAt: -1} }

// bulkInput returns n pairs drawn from about n/2 keys (so most keys repeat)
// with values of 0 to maxV bytes, and the model: the last value of each key.
func bulkInput(rnd *rand.Rand, n, maxV int) ([]kv, map[string]string) {
	model := map[string]string{}
	pairs := make([]kv, n)
	for i := range pairs {
		k := []byte(fmt.Sprintf("key-%d", rnd.IntN(n/2+1)))
		if rnd.IntN(8) == 0 {
			k = []byte(fmt.Sprintf("c%d", rnd.IntN(40))) // collide under collideHash
		}
		v := make([]byte, rnd.IntN(maxV+1))
		for j := range v {
			v[j] = byte(rnd.IntN(256))
		}
		pairs[i] = kv{k, v}
		model[string(k)] = string(v)
	}
	return pairs, model
}

// collideHash gives keys starting with 'c' one of four hash values (equal
// 64-bit hashes: the bulk loader must read the keys to tell them apart);
// other keys get SipHash.
func collideHash(k []byte) uint64 {
	if len(k) > 0 && k[0] == 'c' {
		return 0x123456789abcdef0 ^ uint64(k[len(k)-1]&3)
	}
	return siphash.Hash(1, 2, k)
}

// contents reads every pair of the database in dir.
func contents(t *testing.T, dir string, o *Options) map[string]string {
	t.Helper()
	ro := *o
	ro.ReadOnly = true
	db, err := Open(dir, &ro)
	require.NoError(t, err)
	defer db.Close()
	got := map[string]string{}
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	}))
	return got
}

// liveBySegment opens dir read-only and returns the live bytes of each
// segment generation, and whether the snapshot was loaded.
func liveBySegment(t *testing.T, dir string, o *Options) (map[uint64]int64, bool) {
	t.Helper()
	ro := *o
	ro.ReadOnly = true
	db, err := Open(dir, &ro)
	require.NoError(t, err)
	defer db.Close()
	st, err := db.Stats()
	require.NoError(t, err)
	m := map[uint64]int64{}
	for _, s := range st.Segments {
		m[s.Generation] = s.LiveBytes
	}
	return m, db.st.snapshotLoaded.Load()
}

// TestBulkLoadMatchesPuts: the bulk loader and Puts in input order give
// the same contents and the same live bytes; the bulk-loaded database
// verifies clean, opens from its snapshot with exact accounting (a full
// replay agrees per segment), and then takes normal writes.
func TestBulkLoadMatchesPuts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		maxV  int
		seg   int64
		parts int
		hash  func([]byte) uint64
	}{
		{"small-segs", 3000, 300, 16 << 10, 4, nil},
		{"collisions", 3000, 40, 32 << 10, 2, collideHash},
		{"one-part", 500, 10, 8 << 10, 1, collideHash},
		{"default-parts", 2000, 20, 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(uint64(tc.n), 7))
			pairs, model := bulkInput(rnd, tc.n, tc.maxV)
			fs := vfs.NewMem()
			o := &Options{FS: fs, SegmentSize: tc.seg, Sync: SyncNone, hash: tc.hash}
			var phases []string
			st, err := BulkLoad("/bulk/db", o, source(pairs), &BulkOptions{Partitions: tc.parts,
				Progress: func(p BulkProgress) {
					if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
						phases = append(phases, p.Phase)
					}
				}})
			require.NoError(t, err)
			require.Equal(t, int64(tc.n), st.Records)
			require.Equal(t, int64(len(model)), st.Keys)
			require.Equal(t, []string{"index", "publish"}, phases)
			if tc.hash != nil {
				require.Positive(t, st.KeyReads, "equal hashes were told apart by reading keys")
			}
			names, err := fs.List("/bulk")
			require.NoError(t, err)
			require.Equal(t, []string{"db"}, names, "the staging directory is gone")
			dbNames, err := fs.List("/bulk/db")
			require.NoError(t, err)
			require.NotContains(t, dbNames, bulkSpillName)

			// The same input through the write path.
			db, err := Open("/puts", o)
			require.NoError(t, err)
			for _, p := range pairs {
				require.NoError(t, db.Put(p.k, p.v))
			}
			require.NoError(t, db.Close())

			require.Equal(t, model, contents(t, "/bulk/db", o))
			require.Equal(t, model, contents(t, "/puts", o))
			requireVerifyOK(t, "/bulk/db", o)

			live, fromSnap := liveBySegment(t, "/bulk/db", o)
			require.True(t, fromSnap, "Open uses the bulk loader's snapshot")
			noSnap := *o
			noSnap.DisableSnapshots = true
			replayed, fromSnap := liveBySegment(t, "/bulk/db", &noSnap)
			require.False(t, fromSnap)
			require.Equal(t, replayed, live, "live bytes per segment: snapshot vs full replay")
			var total int64
			for _, n := range live {
				total += n
			}
			putsLive, _ := liveBySegment(t, "/puts", o)
			var putsTotal int64
			for _, n := range putsLive {
				putsTotal += n
			}
			require.Equal(t, putsTotal, total, "live bytes: bulk vs puts")

			// Normal writes work on the loaded database, across reopens.
			db, err = Open("/bulk/db", o)
			require.NoError(t, err)
			require.Equal(t, int64(len(model)), db.ix.Len())
			for i := range 200 {
				k := fmt.Sprintf("key-%d", i)
				if i%3 == 0 {
					require.NoError(t, db.Delete([]byte(k)))
					delete(model, k)
				} else {
					v := fmt.Sprintf("new-%d", i)
					require.NoError(t, db.Put([]byte(k), []byte(v)))
					model[k] = v
				}
			}
			require.NoError(t, db.Close())
			require.Equal(t, model, contents(t, "/bulk/db", o))
			requireVerifyOK(t, "/bulk/db", o)
		})
	}
}

// TestBulkLoadEmptyInput: no pairs gives an empty, valid database.
func TestBulkLoadEmptyInput(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs}
	require.NoError(t, fs.MkdirAll("/db", 0o755)) // an empty directory is a fine target
	st, err := BulkLoad("/db", o, source(nil), nil)
	require.NoError(t, err)
	require.Zero(t, st.Keys)
	names, err := fs.List("/db")
	require.NoError(t, err)
	require.Contains(t, names, MetaFileName)
	requireVerifyOK(t, "/db", o)
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("a"), []byte("b")))
	require.NoError(t, db.Close())
	require.Equal(t, map[string]string{"a": "b"}, contents(t, "/db", o))
}

// TestBulkLoadLargeValues: values close to MaxValueSize, larger than the
// bulk loader's write buffer, one segment each.
func TestBulkLoadLargeValues(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs, SegmentSize: 6 << 20}
	o2, err := o.withDefaults()
	require.NoError(t, err)
	maxV := o2.MaxValueSize // SegmentSize/2
	o.MaxValueSize = int(o.SegmentSize) - segment.HeaderSize - segment.Size(o2.MaxKeySize, 0, true) - 16
	maxV = max(maxV, o.MaxValueSize)
	require.Greater(t, maxV, bulkWriteBuffer)
	model := map[string]string{}
	var pairs []kv
	for i := range 5 {
		v := make([]byte, maxV-i)
		for j := range v {
			v[j] = byte(i + j)
		}
		k := fmt.Sprintf("big-%d", i%3)
		pairs = append(pairs, kv{[]byte(k), v}, kv{[]byte(fmt.Sprintf("small-%d", i)), []byte("x")})
		model[k] = string(v)
		model[fmt.Sprintf("small-%d", i)] = "x"
	}
	st, err := BulkLoad("/db", o, source(pairs), nil)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.Segments, 5)
	require.Equal(t, model, contents(t, "/db", o))
	requireVerifyOK(t, "/db", o)

	// One byte over the limit fails cleanly.
	pairs = append(pairs, kv{[]byte("too-big"), make([]byte, o.MaxValueSize+1)})
	_, err = BulkLoad("/db2", o, source(pairs), nil)
	require.ErrorIs(t, err, ErrValueTooLarge)
	requireNoDatabase(t, fs, "/db2")
}

// requireNoDatabase asserts that dir holds no database and no staging
// directory is left beside it.
func requireNoDatabase(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	_, err := fs.Stat(BulkStagingDir(dir))
	require.ErrorIs(t, err, iofs.ErrNotExist, "staging directory left")
	_, err = fs.Stat(dir)
	require.ErrorIs(t, err, iofs.ErrNotExist, "target created")
}

// TestBulkLoadFailures: a source that fails midway, an empty key and a
// non-empty target publish nothing.
func TestBulkLoadFailures(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	pairs, _ := bulkInput(rnd, 2000, 50)
	fs := vfs.NewMem()
	o := &Options{FS: fs, SegmentSize: 8 << 10}

	src := source(pairs)
	src.failAt = 1500
	_, err := BulkLoad("/a/db", o, src, &BulkOptions{Partitions: 4})
	require.ErrorIs(t, err, errSourceBroke)
	require.ErrorContains(t, err, "after 1500 records")
	requireNoDatabase(t, fs, "/a/db")

	bad := append(append([]kv{}, pairs[:10]...), kv{nil, []byte("v")})
	_, err = BulkLoad("/a/db", o, source(bad), nil)
	require.ErrorIs(t, err, ErrEmptyKey)
	requireNoDatabase(t, fs, "/a/db")

	db, err := Open("/a/existing", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("keep"), []byte("me")))
	require.NoError(t, db.Close())
	_, err = BulkLoad("/a/existing", o, source(pairs), nil)
	require.ErrorIs(t, err, ErrNotEmpty)
	require.Equal(t, map[string]string{"keep": "me"}, contents(t, "/a/existing", o))

	// A staging directory left by a crash is cleared by the next load.
	require.NoError(t, fs.MkdirAll(BulkStagingDir("/a/db"), 0o755))
	writeFile(t, fs, filepath.Join(BulkStagingDir("/a/db"), segment.FileName(1)), []byte("junk"))
	_, err = BulkLoad("/a/db", o, source(pairs[:100]), nil)
	require.NoError(t, err)
	requireVerifyOK(t, "/a/db", o)
}

// TestBulkLoadErrorSweep fails the i-th filesystem operation of a bulk
// load, for every i: the load reports an error, and the target then holds
// either no database (the same load then succeeds) or the complete one
// (only when the failure hit after the publishing rename).
func TestBulkLoadErrorSweep(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	pairs, model := bulkInput(rnd, 600, 40)
	run := func(inj vfs.Injector, fs *vfs.MemFS) (BulkStats, error) {
		o := &Options{FS: vfs.NewErrorFS(fs, inj), SegmentSize: 8 << 10, hash: collideHash}
		return BulkLoad("/p/db", o, source(pairs), &BulkOptions{Partitions: 4})
	}
	clean := &Options{SegmentSize: 8 << 10, hash: collideHash}
	published := 0
	for i := 1; ; i++ {
		fs := vfs.NewMem()
		var ops atomic.Int64 // the writer and the index workers run concurrently
		_, err := run(vfs.InjectorFunc(func(op vfs.Op, name string) error {
			if ops.Add(1) == int64(i) {
				return fmt.Errorf("op %d (%v %s): %w", i, op, name, vfs.ErrInjected)
			}
			return nil
		}), fs)
		c := *clean
		c.FS = fs
		if err == nil {
			// The failed operation was one whose error does not matter (a
			// close of a file only read), or none: the sweep is over.
			require.Equal(t, model, contents(t, "/p/db", &c), "op %d", i)
			if ops.Load() < int64(i) {
				require.Greater(t, i, 20, "the sweep covered some operations")
				require.Positive(t, published, "a failure after the publishing rename")
				break
			}
			continue
		}
		require.ErrorIs(t, err, vfs.ErrInjected, "op %d", i)
		if _, serr := fs.Stat("/p/db/" + MetaFileName); serr == nil {
			require.Equal(t, model, contents(t, "/p/db", &c), "op %d: published database", i)
			published++
			continue
		}
		_, serr := fs.Stat(BulkStagingDir("/p/db"))
		require.ErrorIs(t, serr, iofs.ErrNotExist, "op %d: staging left", i)
		_, err = BulkLoad("/p/db", &c, source(pairs), &BulkOptions{Partitions: 4})
		require.NoError(t, err, "op %d: a retry", i)
		require.Equal(t, model, contents(t, "/p/db", &c), "op %d", i)
	}
}

// TestBulkLoadCrashSweep crashes (a CrashClone of the filesystem, which
// keeps only what was synced) at every operation of a bulk load: Open of
// the target then finds either nothing (an empty new database) or every
// pair, never a part.
func TestBulkLoadCrashSweep(t *testing.T) {
	rnd := rand.New(rand.NewPCG(8, 9))
	pairs, model := bulkInput(rnd, 400, 40)
	empty, full := 0, 0
	for i := 1; ; i++ {
		fs := vfs.NewMem()
		var crashed *vfs.MemFS
		var ops atomic.Int64
		inj := vfs.InjectorFunc(func(op vfs.Op, name string) error {
			if ops.Add(1) == int64(i) {
				crashed = fs.CrashClone(rand.New(rand.NewPCG(uint64(i), 1)))
				return vfs.ErrInjected
			}
			return nil
		})
		o := &Options{FS: vfs.NewErrorFS(fs, inj), SegmentSize: 8 << 10}
		_, err := BulkLoad("/p/db", o, source(pairs), &BulkOptions{Partitions: 2})
		done := err == nil && ops.Load() < int64(i)
		if done {
			// Loaded: a crash now keeps everything.
			require.Greater(t, i, 20)
			crashed = fs.CrashClone(rand.New(rand.NewPCG(uint64(i), 1)))
		}
		c := &Options{FS: crashed, SegmentSize: 8 << 10}
		db, err := Open("/p/db", c)
		require.NoError(t, err, "op %d", i)
		n := db.ix.Len()
		require.NoError(t, db.Close())
		if n == 0 {
			require.False(t, done, "a finished load left nothing")
			empty++
			continue
		}
		full++
		require.Equal(t, model, contents(t, "/p/db", c), "op %d", i)
		requireVerifyOK(t, "/p/db", c)
		if done {
			break
		}
	}
	require.Positive(t, empty, "crashes before the publishing rename")
	require.Positive(t, full, "crashes after it")
}

// TestBulkLoadMisuse: bad partition counts, a staging directory another
// bulk load holds, and a file as the target are refused before anything
// is written.
func TestBulkLoadMisuse(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs}
	for _, n := range []int{3, 8192, -1} {
		_, err := BulkLoad("/db", o, source(nil), &BulkOptions{Partitions: n})
		require.ErrorIs(t, err, ErrBadOptions, "%d partitions", n)
	}
	require.NoError(t, fs.MkdirAll(BulkStagingDir("/db"), 0o755))
	lock, err := fs.Lock(filepath.Join(BulkStagingDir("/db"), LockFileName))
	require.NoError(t, err)
	_, err = BulkLoad("/db", o, source(nil), nil)
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, lock.Close())
	writeFile(t, fs, "/file", []byte("x"))
	_, err = BulkLoad("/file", o, source(nil), nil)
	require.ErrorContains(t, err, "not a directory")
	_, err = fs.Stat("/db")
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

// TestBulkLoadOpenKeepsSnapshot: the bulk loader's snapshot is current, so
// opening and closing the database writes no new one.
func TestBulkLoadOpenKeepsSnapshot(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs}
	pairs, _ := bulkInput(rand.New(rand.NewPCG(1, 2)), 1000, 8)
	_, err := BulkLoad("/db", o, source(pairs), nil)
	require.NoError(t, err)
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.Equal(t, []string{snapName(1)}, snapshotFilesIn(t, fs, "/db"))
}
