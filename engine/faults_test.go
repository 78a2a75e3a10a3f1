package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Fault tests: a failed fsync fails the handle for good; a full disk
// during an append, a batch, a roll, a compaction or a snapshot returns an
// error, damages nothing, leaves no partial file, and writes work again once
// space is freed.

// faultInjector fails the operations match selects while enabled, and
// counts the fsyncs of segment files.
type faultInjector struct {
	enabled  atomic.Bool
	match    func(op vfs.Op, name string) bool
	err      error
	partial  bool
	segSyncs atomic.Int64
}

func (f *faultInjector) MaybeError(op vfs.Op, name string) error {
	if op == vfs.OpSync && isSegName(name) {
		f.segSyncs.Add(1)
	}
	if f.enabled.Load() && f.match(op, name) {
		return f.err
	}
	return nil
}

func (f *faultInjector) ShortWrite(_ error, n int) int {
	if f.partial {
		return n / 2
	}
	return 0
}

func isSegName(name string) bool {
	_, ok := segment.ParseFileName(filepath.Base(name))
	return ok
}

func faultOpts(fs vfs.FS, sm SyncMode) *Options {
	o := swOpts(fs, sm)
	o.SyncInterval = time.Hour
	return o
}

// requireFailed asserts that err is ErrFailed wrapping the original cause.
func requireFailed(t *testing.T, err error, what string) {
	t.Helper()
	require.ErrorIs(t, err, ErrFailed, what)
	require.ErrorIs(t, err, syscall.EIO, "%s: the original error is wrapped", what)
	require.Contains(t, err.Error(), "fsync", what)
}

// TestFsyncFailureFailsHandle: in every sync mode, a failed fsync of the
// active segment is returned to the call that needed it, then every write,
// Sync, Snapshot, Compact and Checkpoint is refused with ErrFailed wrapping
// the cause, even once the fault is gone; the fsync is never retried (no
// segment is fsynced again, not even by Close); reads keep working; and the
// directory reopens with every write acknowledged before the failure, also
// after a power loss.
func TestFsyncFailureFailsHandle(t *testing.T) {
	for _, sm := range []SyncMode{SyncGroup, SyncAlways, SyncPeriodic, SyncNone} {
		t.Run(sm.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			inj := &faultInjector{err: vfs.ErrInjectedIO, match: func(op vfs.Op, name string) bool {
				return op == vfs.OpSync && isSegName(name)
			}}
			db, err := Open("/db", faultOpts(vfs.NewErrorFS(mem, inj), sm))
			require.NoError(t, err)
			for i := range 20 {
				require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("v")))
			}
			require.NoError(t, db.Sync())

			inj.enabled.Store(true)
			err = db.Put([]byte("x"), []byte("covered by the failed fsync"))
			if sm == SyncPeriodic || sm == SyncNone {
				require.NoError(t, err, "buffered")
				err = db.Sync()
			}
			require.Error(t, err, "the failed fsync reaches the caller")
			require.ErrorIs(t, err, syscall.EIO)
			inj.enabled.Store(false) // the fault is gone; the handle stays failed
			syncs := inj.segSyncs.Load()

			var b Batch
			b.Put([]byte("y"), []byte("v"))
			requireFailed(t, db.Put([]byte("y"), []byte("v")), "Put")
			requireFailed(t, db.PutTTL([]byte("y"), []byte("v"), time.Hour), "PutTTL")
			requireFailed(t, db.Delete([]byte("k1")), "Delete")
			requireFailed(t, db.Write(&b), "Write")
			requireFailed(t, db.Sync(), "Sync")
			requireFailed(t, db.Snapshot(), "Snapshot")
			requireFailed(t, db.Compact(), "Compact")
			requireFailed(t, db.Checkpoint("/ckpt"), "Checkpoint")
			v, err := db.Get([]byte("k3"))
			require.NoError(t, err, "reads keep working")
			require.Equal(t, "v", string(v))
			requireFailed(t, db.Close(), "Close")
			require.Equal(t, syncs, inj.segSyncs.Load(), "a failed fsync is never retried, not even by Close")

			for _, img := range []*vfs.MemFS{mem.CrashClone(nil), mem} { // power loss; process restart
				db, err := Open("/db", faultOpts(img, sm))
				require.NoError(t, err)
				for i := range 20 {
					_, err := db.Get(fmt.Appendf(nil, "k%d", i))
					require.NoError(t, err, "acknowledged write %d", i)
				}
				_, err = db.Get([]byte("y"))
				require.ErrorIs(t, err, ErrNotFound, "refused writes are not applied")
				require.NoError(t, db.Put([]byte("y"), []byte("after")), "the reopened handle takes writes")
				require.NoError(t, db.Close())
			}
		})
	}
}

// TestFsyncFailureGroupCommitWaiters: every SyncGroup writer whose record
// the failed fsync covered gets an error, none is acknowledged.
func TestFsyncFailureGroupCommitWaiters(t *testing.T) {
	mem := vfs.NewMem()
	var armed atomic.Bool
	entered := make(chan struct{})
	release := make(chan struct{})
	inj := vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if op == vfs.OpSync && isSegName(name) && armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
			return vfs.ErrInjectedIO
		}
		return nil
	})
	db, err := Open("/db", faultOpts(vfs.NewErrorFS(mem, inj), SyncGroup))
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("before"), []byte("v")))

	armed.Store(true)
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Put(fmt.Appendf(nil, "w%d", i), []byte("v"))
		}()
	}
	start(0)
	<-entered // the flusher is in the fsync that will fail
	for i := 1; i < writers; i++ {
		start(i)
	}
	time.Sleep(20 * time.Millisecond) // let them append and wait
	close(release)
	wg.Wait()
	for i, err := range errs {
		require.Error(t, err, "writer %d was acknowledged although its fsync failed", i)
	}
	require.ErrorIs(t, db.Put([]byte("later"), []byte("v")), ErrFailed)
	require.ErrorIs(t, db.Close(), ErrFailed)

	db, err = Open("/db", faultOpts(mem.CrashClone(nil), SyncGroup))
	require.NoError(t, err)
	_, err = db.Get([]byte("before"))
	require.NoError(t, err)
	require.NoError(t, db.Close())
}

// diskFull returns an injector that fails writes with ENOSPC after writing
// half of the buffer, for the files match accepts (nil: all).
func diskFull(match func(name string) bool) *faultInjector {
	f := &faultInjector{err: vfs.ErrInjectedNoSpace, partial: true}
	f.match = func(op vfs.Op, name string) bool {
		return (op == vfs.OpWrite || op == vfs.OpCreate) && (match == nil || match(name))
	}
	return f
}

// requireCleanDir asserts that dir holds only segments, at most one
// snapshot, and the lock file: no temp file, no partial segment.
func requireCleanDir(t *testing.T, fs vfs.FS, o *Options, what string) {
	t.Helper()
	names, err := fs.List("/db")
	require.NoError(t, err)
	snaps := 0
	for _, n := range names {
		_, isSnap := parseSnapName(n)
		switch {
		case isSnap:
			snaps++
		case n == LockFileName || n == MetaFileName:
		case isSegName(n):
			fi, err := fs.Stat("/db/" + n)
			require.NoError(t, err)
			require.GreaterOrEqual(t, fi.Size(), int64(segment.HeaderSize), "%s: partial segment %s", what, n)
		default:
			t.Fatalf("%s: leftover file %s", what, n)
		}
	}
	require.LessOrEqual(t, snaps, 1, "%s: %v", what, names)
}

// requireModel asserts that db holds exactly model.
func requireModel(t *testing.T, db *DB, model map[string]string, what string) {
	t.Helper()
	got := dumpDB(t, db)
	require.Equal(t, model, got, what)
}

// verifyClosed checks the closed directory with Verify.
func verifyClosed(t *testing.T, o *Options, what string) {
	t.Helper()
	rep, err := Verify("/db", o)
	require.NoError(t, err, what)
	require.True(t, rep.OK(), "%s: %v", what, rep.Problems)
}

// TestDiskFullDuringBatch: a batch that hits a full disk returns the error,
// is all or nothing, and leaves the handle working: once space is freed
// writes work again (a regression: when the batch needed a flush midway,
// the failed flush failed the handle for good). In SyncGroup and
// SyncAlways the batch is already in the write buffer when its own flush
// fails, so, like any write that gets a disk-full error there, it stays
// applied and reaches the disk with the next flush that succeeds; in
// SyncPeriodic and SyncNone the flush that makes room for it fails before
// any of it is appended.
func TestDiskFullDuringBatch(t *testing.T) {
	for _, sm := range []SyncMode{SyncGroup, SyncAlways, SyncPeriodic, SyncNone} {
		t.Run(sm.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			inj := diskFull(nil)
			o := faultOpts(vfs.NewErrorFS(mem, inj), sm)
			db, err := Open("/db", o)
			require.NoError(t, err)
			model := map[string]string{}
			put := func(k, v string) {
				require.NoError(t, db.Put([]byte(k), []byte(v)))
				model[k] = v
			}
			for i := range 10 {
				put(fmt.Sprintf("k%d", i), "before")
			}
			// Fill most of the buffer (unflushed in SyncPeriodic and
			// SyncNone), so the batch needs a flush first.
			put("pad", strings.Repeat("p", 3000))
			inj.enabled.Store(true)
			var b Batch
			for i := range 10 {
				b.Put(fmt.Appendf(nil, "b%d", i), []byte(strings.Repeat("b", 300)))
			}
			b.Delete([]byte("k1"))
			err = db.Write(&b)
			require.ErrorIs(t, err, syscall.ENOSPC)
			require.NotErrorIs(t, err, ErrFailed, "a full disk does not fail the handle")
			present := 0
			for i := range 10 {
				if _, err := db.Get(fmt.Appendf(nil, "b%d", i)); err == nil {
					present++
				}
			}
			require.True(t, present == 0 || present == 10, "the failed batch is all or nothing, %d of 10 applied", present)
			if sm == SyncPeriodic || sm == SyncNone {
				require.Zero(t, present, "the batch was refused before any of it was appended")
			}
			inj.enabled.Store(false)
			require.NoError(t, db.Write(&b), "writes work again once space is freed")
			for i := range 10 {
				model[fmt.Sprintf("b%d", i)] = strings.Repeat("b", 300)
			}
			delete(model, "k1")
			put("after", "x")
			requireModel(t, db, model, "before close")
			require.NoError(t, db.Close())
			requireCleanDir(t, mem, o, "after close")
			db, err = Open("/db", faultOpts(mem.CrashClone(nil), sm))
			require.NoError(t, err)
			requireModel(t, db, model, "after reopen")
			require.NoError(t, db.Close())
			verifyClosed(t, faultOpts(mem, sm), "after close")
		})
	}
}

// TestDiskFullDuringRoll: a full disk while a roll creates the next
// segment returns an error, removes the partial segment file, and leaves
// the handle working.
func TestDiskFullDuringRoll(t *testing.T) {
	mem := vfs.NewMem()
	inj := diskFull(nil)
	o := faultOpts(vfs.NewErrorFS(mem, inj), SyncAlways)
	db, err := Open("/db", o)
	require.NoError(t, err)
	model := map[string]string{}
	val := strings.Repeat("r", 400)
	i := 0
	for ; ; i++ { // fill the first segment to just before a roll
		st, err := db.Stats()
		require.NoError(t, err)
		if st.Segments[0].Size+2*int64(segment.Size(8, len(val), false)) > o.SegmentSize {
			break
		}
		k := fmt.Sprintf("k%05d", i)
		require.NoError(t, db.Put([]byte(k), []byte(val)))
		model[k] = val
	}
	// Fail only the creation of the next segment: its Create, then its
	// header write.
	for _, failOp := range []vfs.Op{vfs.OpCreate, vfs.OpWrite} {
		inj.enabled.Store(true)
		inj.match = func(op vfs.Op, name string) bool {
			return op == failOp && isSegName(name) && !strings.HasSuffix(name, segment.FileName(1))
		}
		var err error
		for j := 0; j < 5 && err == nil; j++ {
			k := fmt.Sprintf("k%05d", i)
			i++
			err = db.Put([]byte(k), []byte(val))
			if err == nil {
				model[k] = val
			}
		}
		require.Error(t, err, "%v: a roll must have been needed", failOp)
		require.ErrorIs(t, err, syscall.ENOSPC)
		inj.enabled.Store(false)
		requireCleanDir(t, mem, o, fmt.Sprintf("%v failed", failOp))
		names, err := mem.List("/db")
		require.NoError(t, err)
		require.NotContains(t, names, segment.FileName(2), "%v: the partial segment is removed", failOp)
		requireModel(t, db, model, fmt.Sprintf("%v failed", failOp))
	}
	for j := range 30 {
		k := fmt.Sprintf("after%d", j)
		require.NoError(t, db.Put([]byte(k), []byte(val)))
		model[k] = val
	}
	st, err := db.Stats()
	require.NoError(t, err)
	require.Greater(t, st.Rolls, int64(0))
	require.NoError(t, db.Close())
	requireCleanDir(t, mem, o, "after close")
	db, err = Open("/db", faultOpts(mem.CrashClone(nil), SyncAlways))
	require.NoError(t, err)
	requireModel(t, db, model, "after a power loss")
	require.NoError(t, db.Close())
	verifyClosed(t, faultOpts(mem, SyncAlways), "after close")
}

// TestDiskFullDuringCompaction: compaction that hits a full disk while it
// copies records returns the error; every key still reads right, the DB
// keeps working, and compaction succeeds once space is freed.
func TestDiskFullDuringCompaction(t *testing.T) {
	mem := vfs.NewMem()
	inj := diskFull(nil)
	o := faultOpts(vfs.NewErrorFS(mem, inj), SyncGroup)
	db, err := Open("/db", o)
	require.NoError(t, err)
	model := map[string]string{}
	for round := range 6 {
		for i := range 40 {
			k, v := fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d-%s", round, strings.Repeat("c", 100))
			require.NoError(t, db.Put([]byte(k), []byte(v)))
			model[k] = v
		}
	}
	before, err := db.Stats()
	require.NoError(t, err)
	require.Greater(t, len(before.Segments), 3)

	inj.enabled.Store(true)
	err = db.Compact()
	require.ErrorIs(t, err, syscall.ENOSPC)
	requireModel(t, db, model, "after the failed compaction")
	requireCleanDir(t, mem, o, "after the failed compaction")
	inj.enabled.Store(false)

	require.NoError(t, db.Put([]byte("after"), []byte("x")))
	model["after"] = "x"
	require.NoError(t, db.Compact(), "compaction works once space is freed")
	after, err := db.Stats()
	require.NoError(t, err)
	require.Less(t, after.DiskBytes, before.DiskBytes)
	requireModel(t, db, model, "after compaction")
	require.NoError(t, db.Close())
	requireCleanDir(t, mem, o, "after close")
	verifyClosed(t, faultOpts(mem, SyncGroup), "after close")
	db, err = Open("/db", faultOpts(mem.CrashClone(nil), SyncGroup))
	require.NoError(t, err)
	requireModel(t, db, model, "after a power loss")
	require.NoError(t, db.Close())
}

// TestDiskFullDuringSnapshot: a snapshot that hits a full disk returns the
// error and removes its temp file; the previous snapshot stays usable, and
// snapshots work again once space is freed.
func TestDiskFullDuringSnapshot(t *testing.T) {
	mem := vfs.NewMem()
	inj := diskFull(func(name string) bool { return filepath.Base(name) == snapTmpName })
	o := faultOpts(vfs.NewErrorFS(mem, inj), SyncNone)
	db, err := Open("/db", o)
	require.NoError(t, err)
	model := map[string]string{}
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		require.NoError(t, db.Put([]byte(k), []byte(k)))
		model[k] = k
	}
	require.NoError(t, db.Snapshot())
	first := snapshotFiles(t, mem)
	require.Len(t, first, 1)
	for i := range 50 {
		k := fmt.Sprintf("n%03d", i)
		require.NoError(t, db.Put([]byte(k), []byte(k)))
		model[k] = k
	}
	inj.enabled.Store(true)
	for _, op := range []vfs.Op{vfs.OpWrite, vfs.OpCreate} {
		inj.match = func(o vfs.Op, name string) bool { return o == op && filepath.Base(name) == snapTmpName }
		err = db.Snapshot()
		require.ErrorIs(t, err, syscall.ENOSPC, "%v", op)
		requireCleanDir(t, mem, o, fmt.Sprintf("snapshot %v failed", op))
		require.Equal(t, first, snapshotFiles(t, mem), "the previous snapshot stays")
	}
	// Close cannot write its snapshot either: it returns the error, and
	// the previous snapshot plus the log still give the whole state.
	require.NoError(t, db.Put([]byte("last"), []byte("x")))
	model["last"] = "x"
	err = db.Close()
	require.ErrorIs(t, err, syscall.ENOSPC)
	requireCleanDir(t, mem, o, "close failed to snapshot")
	inj.enabled.Store(false)

	db, err = Open("/db", o)
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.True(t, st.OpenedFromSnapshot, "the previous snapshot is used")
	requireModel(t, db, model, "after reopen")
	require.NoError(t, db.Snapshot(), "snapshots work once space is freed")
	require.NoError(t, db.Close())
	verifyClosed(t, o, "after close")
}

var _ = errors.Is

// TestNewDirectoryEntriesSynced: Open and Checkpoint fsync the parent of
// every directory they create, before anything is written into it, so a
// power loss cannot take a new database or checkpoint directory away with
// everything acknowledged in it (a regression: the new directory's entry
// was never synced, against DESIGN-NOTES rule 2; MemFS makes MkdirAll
// durable at once, so the crash sweep could not see it).
func TestNewDirectoryEntriesSynced(t *testing.T) {
	mem := vfs.NewMem()
	require.NoError(t, mem.MkdirAll("/data", 0o755))
	var mu sync.Mutex
	var ops []string
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if op == vfs.OpMkdir || op == vfs.OpSyncDir || op == vfs.OpCreate {
			mu.Lock()
			ops = append(ops, op.String()+" "+name)
			mu.Unlock()
		}
		return nil
	}))
	index := func(op string) int {
		mu.Lock()
		defer mu.Unlock()
		for i, o := range ops {
			if o == op {
				return i
			}
		}
		return -1
	}
	firstCreate := func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		for i, o := range ops {
			if strings.HasPrefix(o, "create "+prefix) {
				return i
			}
		}
		return -1
	}

	db, err := Open("/data/x/db", faultOpts(fs, SyncGroup))
	require.NoError(t, err)
	mk := index("mkdir /data/x/db")
	require.GreaterOrEqual(t, mk, 0)
	for _, parent := range []string{"/data/x", "/data"} {
		i := index("syncdir " + parent)
		require.Greater(t, i, mk, "%s is synced after the mkdir: %v", parent, ops)
		require.Less(t, i, firstCreate("/data/x/db/"), "%s is synced before anything is created in the new directory: %v", parent, ops)
	}
	require.NoError(t, db.Put([]byte("k"), []byte("v")))

	mu.Lock()
	ops = nil
	mu.Unlock()
	require.NoError(t, db.Checkpoint("/data/ck/1"))
	for _, parent := range []string{"/data/ck", "/data"} {
		require.GreaterOrEqual(t, index("syncdir "+parent), 0, "checkpoint: %s synced: %v", parent, ops)
		require.Less(t, index("syncdir "+parent), firstCreate("/data/ck/1/"), "checkpoint: %v", ops)
	}
	require.NoError(t, db.Close())

	mu.Lock()
	ops = nil
	mu.Unlock()
	db, err = Open("/data/x/db", faultOpts(fs, SyncGroup))
	require.NoError(t, err)
	require.Equal(t, -1, index("syncdir /data/x"), "an existing directory costs no parent sync")
	require.NoError(t, db.Close())
}

// TestCloseReportsFailedHandle: when background work (here the
// snapshotter) fails the handle with a failed fsync, no call has seen the
// error; Close, which then discards what is not durable, must return it
// (a regression: Close returned nil, so in SyncNone and SyncPeriodic
// writes before a successful Close looked durable and were lost; found by
// the long error sweep).
func TestCloseReportsFailedHandle(t *testing.T) {
	mem := vfs.NewMem()
	inj := &faultInjector{err: vfs.ErrInjectedIO, match: func(op vfs.Op, name string) bool {
		return op == vfs.OpSync && isSegName(name)
	}}
	o := faultOpts(vfs.NewErrorFS(mem, inj), SyncNone)
	o.SnapshotInterval, o.SnapshotRecords, o.SnapshotLogRatio = 10*time.Millisecond, 1, -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	inj.enabled.Store(true)
	require.NoError(t, db.Put([]byte("k"), []byte("v")), "buffered")
	require.Eventually(t, func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.failed != nil
	}, 10*time.Second, time.Millisecond, "the background snapshot's fsync fails the handle")
	inj.enabled.Store(false)
	requireFailed(t, db.Close(), "Close after a failure nobody saw")
	require.NoError(t, db.Close(), "a second Close returns nil")

	db, err = Open("/db", faultOpts(mem.CrashClone(nil), SyncNone))
	require.NoError(t, err)
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound, "the write was never durable")
	require.NoError(t, db.Close())
}
