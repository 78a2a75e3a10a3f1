package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/vfs"
)

// Recovery replay tests (issue 9, items 9, 10 and 12): a snapshot taken
// across a roll, an unreadable candidate during replay, tombstones that
// must not occupy index slots, and the snapshot's proof of fsynced data.

// rpOpts: snapshots on, background workers idle (long intervals).
func rpOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, SegmentSize: 4096, WriteBufferSize: 4096, Sync: SyncNone,
		Logger: discardLogger, IndexReserve: 1 << 26, CompactionThreshold: -1,
		SnapshotInterval: 1 << 40, SnapshotRecords: 1 << 40}
}

// rpCount returns how many times ForEach yields key.
func rpCount(t *testing.T, db *DB, key string) int {
	t.Helper()
	n := 0
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		if string(k) == key {
			n++
		}
		return nil
	}))
	return n
}

// rpRollFixture opens /db holding 20 keys, set up so that the next
// snapshot's copy sees, after its replay position: a put of "dup"=v1 in
// the segment the position is in, a roll, then "dup"=v2 in the new
// segment.
func rpRollFixture(t *testing.T) (*vfs.MemFS, *DB) {
	fs := vfs.NewMem()
	db, err := Open("/db", rpOpts(fs))
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), []byte("x")))
	}
	rpRollDuring(t, db)
	return fs, db
}

// rpRollDuring sets the snapshot copy hook of rpRollFixture.
func rpRollDuring(t *testing.T, db *DB) {
	db.onceSnapshotCopy(func() {
		require.NoError(t, db.Put([]byte("dup"), []byte("v1")))
		putUntilRoll(t, db, func(i int) error {
			return db.Put(fmt.Appendf(nil, "fill-%d", i), bytes.Repeat([]byte("f"), 100))
		})
		require.NoError(t, db.Put([]byte("dup"), []byte("v2")))
	})
}

// rpCheckDup asserts that the database in dir (on fs) has exactly one entry
// for "dup", the newest, that a delete removes it for good, and that
// Verify is clean.
func rpCheckDup(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	requireVerifyOK(t, dir, rpOpts(fs))
	db, err := Open(dir, rpOpts(fs))
	require.NoError(t, err)
	require.True(t, db.st.snapshotLoaded.Load(), "the snapshot must be used")
	require.Equal(t, 1, rpCount(t, db, "dup"), "one entry per key")
	v, err := db.Get([]byte("dup"))
	require.NoError(t, err)
	require.Equal(t, "v2", string(v))
	require.NoError(t, db.Delete([]byte("dup")))
	_, err = db.Get([]byte("dup"))
	require.ErrorIs(t, err, ErrNotFound, "a deleted key must not come back with an older value")
	require.NoError(t, db.ix.Check())
	require.NoError(t, db.Close())
}

// TestSnapshotAcrossRollOneEntryPerKey: item 12. Before the fix, recovery
// replayed the older segment before opening the newer one that the
// snapshot's entry for "dup" pointed into, took that entry for stale, and
// inserted the replayed v1 as a second entry: ForEach yielded "dup" twice
// and after Delete, Get returned v1.
func TestSnapshotAcrossRollOneEntryPerKey(t *testing.T) {
	fs, db := rpRollFixture(t)
	require.NoError(t, db.Snapshot())
	// A crash now: the snapshot is the newest, nothing after it.
	crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, db.Close())
	rpCheckDup(t, crashed, "/db")
}

// TestCheckpointAcrossRollOneEntryPerKey: item 12 with Checkpoint, whose
// snapshot is taken while a writer rolls the log (same failure before the
// fix: "dup" twice, and back after Delete).
func TestCheckpointAcrossRollOneEntryPerKey(t *testing.T) {
	fs, db := rpRollFixture(t)
	require.NoError(t, db.Checkpoint("/ckpt"))
	require.NoError(t, db.Close())
	rpCheckDup(t, fs, "/ckpt")
}

// TestReplayUnreadableCandidateIsCorrupt: item 9. The snapshot's entry for
// a key points at a record that rotted; replaying the key's newer record
// must not take the unreadable one for another key's (which left two
// entries for the key before the fix): Open fails with ErrCorrupt naming
// the file and offset, as the write path does.
func TestReplayUnreadableCandidateIsCorrupt(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", rpOpts(fs))
	require.NoError(t, err)
	rcPut(t, db, 0, 100)
	require.NoError(t, db.Snapshot())
	require.NoError(t, db.Put(rcKey(5), []byte("newer")))
	require.NoError(t, db.Sync())
	crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, db.Close())

	// Rot the old record of key 5 (before the replay position: only the
	// snapshot's entry leads to it).
	files := rcSegFiles(t, crashed, "/db")
	var path string
	var victim rcRec
	for _, f := range files {
		for _, r := range rcLayout(t, rcRead(t, crashed, f), rcGen(t, f)) {
			if r.key == string(rcKey(5)) && string(r.value) == string(rcVal(5)) {
				path, victim = f, r
			}
		}
	}
	require.NotEmpty(t, path)
	d := rcRead(t, crashed, path)
	d[victim.valOff+1] ^= 0x10
	rcWrite(t, crashed, path, d)

	_, err = Open("/db", rpOpts(crashed))
	rcRequireCorrupt(t, err, path, victim.off)
}

// rpCollide forces every key "c<n>" into shard 0 with a fingerprint at the
// very top of the range: all of them share the shard's last home slot.
func rpCollide(o *Options) *Options {
	o.hash = func(k []byte) uint64 {
		if n, err := strconv.Atoi(strings.TrimPrefix(string(k), "c")); err == nil && k[0] == 'c' {
			fp := uint64(1<<index.FPBits - 1 - n)
			return fp << (64 - index.ShardBits - index.FPBits)
		}
		return farmish(k)
	}
	return o
}

// farmish is a throwaway hash for the keys rpCollide does not force.
func farmish(k []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range k {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// rpCollidingHistory writes a put/delete/put history of colliding keys,
// every call acknowledged: keys c0..c8 put, then deleted, then c9..c17 put
// (never more than 9 live at a time, which the index holds).
func rpCollidingHistory(t *testing.T, db *DB) {
	t.Helper()
	for i := range 9 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", i), []byte("a")))
	}
	for i := range 9 {
		require.NoError(t, db.Delete(fmt.Appendf(nil, "c%d", i)))
	}
	for i := 9; i < 18; i++ {
		require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", i), []byte("b")))
	}
}

func rpCheckColliding(t *testing.T, db *DB) {
	t.Helper()
	for i := range 18 {
		v, err := db.Get(fmt.Appendf(nil, "c%d", i))
		if i < 9 {
			require.ErrorIs(t, err, ErrNotFound, "c%d", i)
		} else {
			require.NoError(t, err, "c%d", i)
			require.Equal(t, "b", string(v))
		}
	}
	require.NoError(t, db.ix.Check())
}

// TestReplayTombstonesTakeNoSlots: tombstones took index slots during
// replay, so an acknowledged put/delete/put history of colliding keys made
// Open fail with ErrCollision (full replay, and replay after a snapshot
// taken before the deletes). Now a tombstone just removes the older entry.
func TestReplayTombstonesTakeNoSlots(t *testing.T) {
	t.Run("full replay", func(t *testing.T) {
		fs := vfs.NewMem()
		o := rpCollide(rpOpts(fs))
		o.DisableSnapshots = true
		db, err := Open("/db", o)
		require.NoError(t, err)
		rpCollidingHistory(t, db)
		require.NoError(t, db.Close())
		db, err = Open("/db", o)
		require.NoError(t, err)
		rpCheckColliding(t, db)
		require.NoError(t, db.Close())
	})
	t.Run("expired", func(t *testing.T) {
		// put with a TTL, expiry (reclaimed by the expirer), put: the
		// expired puts must not take slots in a full replay either.
		fs := vfs.NewMem()
		clk := newFakeClock()
		o := clk.opts(rpCollide(rpOpts(fs)))
		o.DisableSnapshots, o.ExpiryInterval = true, -1
		db, err := Open("/db", o)
		require.NoError(t, err)
		for i := range 9 {
			require.NoError(t, db.PutTTL(fmt.Appendf(nil, "c%d", i), []byte("a"), time.Minute))
		}
		clk.Advance(2 * time.Minute)
		require.NoError(t, db.Sync()) // the expirer reads flushed records
		removed, _ := db.expirePass(map[*segFile]*expiryCursor{}, 100)
		require.Equal(t, 9, removed)
		for i := 9; i < 18; i++ {
			require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", i), []byte("b")))
		}
		require.NoError(t, db.Close())
		db, err = Open("/db", o)
		require.NoError(t, err)
		rpCheckColliding(t, db)
		require.NoError(t, db.Close())
	})
	t.Run("snapshot", func(t *testing.T) {
		fs := vfs.NewMem()
		o := rpCollide(rpOpts(fs))
		db, err := Open("/db", o)
		require.NoError(t, err)
		for i := range 9 {
			require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", i), []byte("a")))
		}
		require.NoError(t, db.Snapshot())
		for i := range 9 {
			require.NoError(t, db.Delete(fmt.Appendf(nil, "c%d", i)))
		}
		for i := 9; i < 18; i++ {
			require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", i), []byte("b")))
		}
		require.NoError(t, db.Sync())
		crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 2)))
		require.NoError(t, db.Close())
		o.FS = crashed
		db, err = Open("/db", o)
		require.NoError(t, err)
		require.True(t, db.st.snapshotLoaded.Load())
		rpCheckColliding(t, db)
		require.NoError(t, db.Close())
	})
}

// TestSnapshotProvesFsyncedData: item 10's recovery rule. The newest
// snapshot's segment table proves how much of each segment was fsynced.
// Before the fix, a newest segment cut below that size made the snapshot
// "stale" and the full replay that followed truncated the acknowledged
// records silently; damage below it was truncated as a torn tail.
func TestSnapshotProvesFsyncedData(t *testing.T) {
	setup := func(t *testing.T) (*vfs.MemFS, string) {
		fs := vfs.NewMem()
		db, err := Open("/db", rpOpts(fs))
		require.NoError(t, err)
		rcPut(t, db, 0, 10)
		// Records written during the copy land between the replay and
		// the accounting positions: recovery scans them.
		db.onceSnapshotCopy(func() { rcPut(t, db, 10, 20) })
		require.NoError(t, db.Snapshot())
		crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 2))) // no Close mark
		require.NoError(t, db.Close())
		files := rcSegFiles(t, crashed, "/db")
		return crashed, files[len(files)-1]
	}
	t.Run("cut short", func(t *testing.T) {
		fs, newest := setup(t)
		size := rcSize(t, fs, newest)
		rcTruncate(t, fs, newest, size-100)
		_, err := Open("/db", rpOpts(fs))
		rcRequireCorrupt(t, err, newest, size-100)
		_, err = Open("/db", func() *Options { o := rpOpts(fs); o.ReadOnly = true; return o }())
		require.ErrorIs(t, err, ErrCorrupt)
	})
	t.Run("damaged", func(t *testing.T) {
		fs, newest := setup(t)
		d := rcRead(t, fs, newest)
		recs := rcLayout(t, d, rcGen(t, newest))
		last := recs[len(recs)-1]
		require.Equal(t, string(rcKey(19)), last.key)
		d[last.valOff] ^= 0x01
		rcWrite(t, fs, newest, d)
		var logged bytes.Buffer
		o := rpOpts(fs)
		o.Logger = slog.New(slog.NewTextHandler(&logged, nil))
		_, err := Open("/db", o)
		rcRequireCorrupt(t, err, newest, last.off)
		require.Equal(t, int64(len(d)), rcSize(t, fs, newest), "nothing was truncated")
	})
	// An Open that does not use snapshots (DisableSnapshots) still takes
	// the newest snapshot's word for what was fsynced: before, its full
	// replay truncated the damaged records as a torn tail.
	t.Run("damaged, snapshots off", func(t *testing.T) {
		fs, newest := setup(t)
		d := rcRead(t, fs, newest)
		recs := rcLayout(t, d, rcGen(t, newest))
		last := recs[len(recs)-1]
		d[last.valOff] ^= 0x01
		rcWrite(t, fs, newest, d)
		o := rpOpts(fs)
		o.DisableSnapshots = true
		_, err := Open("/db", o)
		rcRequireCorrupt(t, err, newest, last.off)
		require.Equal(t, int64(len(d)), rcSize(t, fs, newest), "nothing was truncated")
	})
	// A newest segment the snapshot lists, zeroed whole (its length kept),
	// looked like a segment torn at its creation and was removed with
	// every record in it. Its header was fsynced before the snapshot
	// listed it: it is damage.
	t.Run("zeroed", func(t *testing.T) {
		fs, newest := setup(t)
		size := rcSize(t, fs, newest)
		rcWrite(t, fs, newest, make([]byte, size))
		_, err := Open("/db", rpOpts(fs))
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, newest)
		require.Equal(t, size, rcSize(t, fs, newest), "the segment is still there, untouched")
		ends, err := LogEnds("/db", rpOpts(fs))
		require.NoError(t, err)
		require.NotEmpty(t, ends)
		require.False(t, ends[len(ends)-1].TornTail, "LogEnds agrees: not a torn tail")
	})
}

// TestTornTailLogNamesFile: the torn-tail warning named no file ("corrupt
// data in  at offset").
func TestTornTailLogNamesFile(t *testing.T) {
	fs, files := rcMultiSegment(t, 120)
	rcStripCloseMark(t, fs, rcDir)
	newest := files[len(files)-1]
	size := rcSize(t, fs, newest)
	rcTruncate(t, fs, newest, size-5)
	var logged bytes.Buffer
	o := rcOpts(fs, 4096)
	o.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	db, err := Open(rcDir, o)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.Contains(t, logged.String(), "truncating torn tail")
	require.NotContains(t, logged.String(), "in  at")
	require.Contains(t, logged.String(), "corrupt data in "+newest)
}

// rpCheckOnce asserts that the database in dir (on fs) yields every key
// once, and that Verify (which compares the snapshot-loaded index with a
// full replay and checks the live-byte accounting) is clean.
func rpCheckOnce(t *testing.T, fs vfs.FS, dir string, round int) {
	t.Helper()
	rep, err := Verify(dir, rpOpts(fs))
	require.NoError(t, err, "round %d", round)
	require.True(t, rep.OK(), "round %d: %v", round, rep.Problems)
	db, err := Open(dir, rpOpts(fs))
	require.NoError(t, err, "round %d", round)
	seen := map[string]bool{}
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		require.False(t, seen[string(k)], "round %d: key %s yielded twice", round, k)
		seen[string(k)] = true
		return nil
	}))
	require.NoError(t, db.Close())
}

// rpWriter overwrites and deletes a few keys until stop closes, rolling
// the small segments often.
func rpWriter(t *testing.T, db *DB, stop chan struct{}, done chan error) {
	go func() {
		rnd := rand.New(rand.NewPCG(3, 4))
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if i%50 == 49 {
				time.Sleep(time.Millisecond) // pacing (the machine is shared), not synchronisation
			}
			k := fmt.Appendf(nil, "w%d", rnd.IntN(20))
			var err error
			if rnd.IntN(4) == 0 {
				err = db.Delete(k)
			} else {
				err = db.Put(k, fmt.Appendf(nil, "%d-%s", i, strings.Repeat("v", rnd.IntN(200))))
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
}

// TestSnapshotsUnderConcurrentWrites: item 12 with real concurrency: the
// DB's own snapshots, each followed by a crash image, and checkpoints,
// taken while one writer overwrites and deletes keys across frequent
// rolls. Every image must give one entry per key and a clean Verify.
func TestSnapshotsUnderConcurrentWrites(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 8
	}
	fs := vfs.NewMem()
	o := rpOpts(fs)
	o.CompactionThreshold = 0.5 // and compaction in the background
	o.CompactionInterval = 20 * time.Millisecond
	db, err := Open("/db", o)
	require.NoError(t, err)
	stop, done := make(chan struct{}), make(chan error, 1)
	rpWriter(t, db, stop, done)
	rnd := rand.New(rand.NewPCG(5, 6))
	for round := range rounds {
		require.NoError(t, db.Snapshot())
		crashed := fs.CrashClone(rnd)
		dir := fmt.Sprintf("/ckpt%d", round)
		require.NoError(t, db.Checkpoint(dir))
		rpCheckOnce(t, crashed, "/db", round)
		rpCheckOnce(t, fs, dir, round)
	}
	close(stop)
	require.NoError(t, <-done)
	require.NoError(t, db.Close())
}
