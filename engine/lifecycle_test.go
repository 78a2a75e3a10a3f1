package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Compaction lifecycle tests (issue 9, items 1 to 4): damaged segments,
// deletion after the snapshot, segment ids running out, idle quiet, and
// live-byte accounting under expiry.

// lcOpts: small segments, snapshots on, no background compaction or
// expiry (tests drive them).
func lcOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, SegmentSize: 4096, WriteBufferSize: 4096, Sync: SyncNone,
		Logger: discardLogger, IndexReserve: 1 << 26, CompactionThreshold: -1, ExpiryInterval: -1,
		SnapshotInterval: 1 << 40, SnapshotRecords: 1 << 40}
}

// lcFill writes keys 0..n-1, then overwrites every other one: every sealed
// segment has dead bytes.
func lcFill(t *testing.T, db *DB, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	for round := range 2 {
		for i := range n {
			if round == 1 && i%2 == 1 {
				continue
			}
			k, v := fmt.Sprintf("key-%04d", i), fmt.Sprintf("v%d-%d-%s", round, i, bytes.Repeat([]byte("x"), 40))
			require.NoError(t, db.Put([]byte(k), []byte(v)))
			want[k] = v
		}
	}
	return want
}

// lcRead asserts that db reads want, except keys in skip, which may fail
// with ErrCorrupt.
func lcRead(t *testing.T, db *DB, want map[string]string, skip map[string]bool) {
	t.Helper()
	for k, v := range want {
		got, err := db.Get([]byte(k))
		if skip[k] && errors.Is(err, ErrCorrupt) {
			continue
		}
		require.NoError(t, err, k)
		require.Equal(t, v, string(got), k)
	}
}

// TestCompactSkipsDamagedSegment: item 1. One flipped byte in a sealed
// segment made Compact stop with ErrCorrupt after it had removed other
// segments that the newest snapshot still listed; the snapshot was then
// stale and the full replay hit the damage, so the database no longer
// opened. Now compaction skips (and reports) the damaged segment, goes on
// with the rest, never retries it in later passes, and the database opens
// and reads as before.
func TestCompactSkipsDamagedSegment(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	want := lcFill(t, db, 300)
	require.NoError(t, db.Close()) // snapshot

	files := rcSegFiles(t, fs, "/db")
	require.Greater(t, len(files), 6)
	victimFile := files[len(files)/2]
	d := rcRead(t, fs, victimFile)
	recs := rcLayout(t, d, rcGen(t, victimFile))
	victim := recs[len(recs)/2]
	d[victim.valOff] ^= 0x20
	rcWrite(t, fs, victimFile, d)
	skip := map[string]bool{victim.key: true}

	db, err = Open("/db", lcOpts(fs))
	require.NoError(t, err)
	require.True(t, db.st.snapshotLoaded.Load())
	require.NoError(t, db.Compact(), "a damaged record must not stop compaction")
	st, err := db.Stats()
	require.NoError(t, err)
	require.Positive(t, st.CompactionSkippedBytes)
	require.Equal(t, 1, st.DamagedSegments)
	require.Positive(t, st.SegmentsRemoved, "the other segments are compacted")
	lcRead(t, db, want, skip)
	require.NoError(t, db.Compact())
	st2, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, st.CompactionSkippedBytes, st2.CompactionSkippedBytes, "not retried")
	require.Equal(t, 1, st2.DamagedSegments)
	require.NoError(t, db.Close())
	_, err = fs.Stat(victimFile)
	require.NoError(t, err, "the damaged segment is kept")

	db, err = Open("/db", lcOpts(fs))
	require.NoError(t, err, "the database opens after compaction met damage")
	lcRead(t, db, want, skip)
	require.NoError(t, db.Close())
}

// TestFailedCompactionKeepsFiles: item 1. A compaction that fails midway
// (here: the snapshot at its end cannot be written) must leave every file
// the newest snapshot lists, so the directory opens from that snapshot and
// reads as before. Before the fix, compacted segments were deleted at once
// and the snapshot went stale.
func TestFailedCompactionKeepsFiles(t *testing.T) {
	mem := vfs.NewMem()
	var failSnap atomic.Bool
	efs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if failSnap.Load() && op == vfs.OpCreate && strings.HasSuffix(name, snapTmpName) {
			return errors.New("injected: no snapshot")
		}
		return nil
	}))
	o := lcOpts(efs)
	db, err := Open("/db", o)
	require.NoError(t, err)
	want := lcFill(t, db, 300)
	require.NoError(t, db.Snapshot())
	before := rcSegFiles(t, mem, "/db")
	failSnap.Store(true)
	require.Error(t, db.Compact())
	for _, f := range before {
		_, err := mem.Stat(f)
		require.NoError(t, err, "no segment the newest snapshot lists may be removed")
	}
	crashed := mem.CrashClone(nil)
	failSnap.Store(false)
	require.NoError(t, db.Close())

	db, err = Open("/db", lcOpts(crashed))
	require.NoError(t, err)
	require.True(t, db.st.snapshotLoaded.Load(), "the newest snapshot is still usable")
	lcRead(t, db, want, nil)
	require.NoError(t, db.Close())
}

// TestSegmentIDsRunOut: item 2. With small segments, overwrites of a few
// keys use up every segment id; before the fix, Delete, Compact and even
// Open then failed with ErrFull on a log that was almost all dead. Now
// they work (they may use the reserved ids), and after compaction puts
// work again.
func TestSegmentIDsRunOut(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	skipIDExhaustionUnderRace(t)
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	// Two records a segment: the 8192 ids fill in about 16,000 puts.
	big := bytes.Repeat([]byte("b"), 1800)
	var full error
	for i := 0; full == nil; i++ {
		require.Less(t, i, 1<<20, "the log never filled")
		full = db.Put(fmt.Appendf(nil, "k%d", i%4), big)
	}
	require.ErrorIs(t, full, ErrFull)
	require.NoError(t, db.Delete([]byte("k0")), "a delete is never blocked by a full log")
	val := bytes.Repeat([]byte("v"), 200)
	require.NoError(t, db.Close())

	db, err = Open("/db", lcOpts(fs))
	require.NoError(t, err, "Open works on a full log")
	require.NoError(t, db.Delete([]byte("k1")))
	require.NoError(t, db.Compact())
	for i := range 100 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), val), "puts work again after compaction")
	}
	_, err = db.Get([]byte("k0"))
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Less(t, len(st.Segments), 64)
	require.NoError(t, db.Close())
	db, err = Open("/db", lcOpts(fs))
	require.NoError(t, err)
	v, err := db.Get([]byte("k99"))
	require.NoError(t, err)
	require.Equal(t, val, v)
	require.NoError(t, db.Close())
}

// TestIdleDatabaseGoesQuiet: item 3. With 30% of the keys deleted and some
// overwritten, the background workers kept rewriting copied tombstones
// (counted dead at once) and wrote a snapshot after every pass, forever.
// Now, once the work settles, no background work writes anything.
func TestIdleDatabaseGoesQuiet(t *testing.T) {
	fs := vfs.NewMem()
	o := lcOpts(fs)
	o.SegmentSize = 16 << 10
	o.CompactionThreshold = 0.25
	o.CompactionInterval = 20 * time.Millisecond
	o.SnapshotInterval = 20 * time.Millisecond
	o.SnapshotLogRatio = -1
	o.ExpiryInterval = 20 * time.Millisecond
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	const n = 3000
	for i := range n {
		require.NoError(t, db.Put(fmt.Appendf(nil, "key-%05d", i), bytes.Repeat([]byte("v"), 30)))
	}
	for i := range n {
		switch {
		case i%10 < 3:
			require.NoError(t, db.Delete(fmt.Appendf(nil, "key-%05d", i)))
		case i%10 == 5:
			require.NoError(t, db.Put(fmt.Appendf(nil, "key-%05d", i), []byte("new")))
		}
	}
	// Await the settling: BytesWritten and Snapshots unchanged over 10
	// consecutive intervals, within a bound.
	sample := func() (int64, int64) {
		st, err := db.Stats()
		require.NoError(t, err)
		return st.BytesWritten, st.Snapshots
	}
	deadline := time.Now().Add(20 * time.Second)
	bw, sn := sample()
	stable := 0
	for stable < 10 {
		require.True(t, time.Now().Before(deadline), "background work never settled (BytesWritten %d, snapshots %d)", bw, sn)
		time.Sleep(20 * time.Millisecond)
		b2, s2 := sample()
		if b2 == bw && s2 == sn {
			stable++
		} else {
			bw, sn, stable = b2, s2, 0
		}
	}
	st, err := db.Stats()
	require.NoError(t, err)
	require.Positive(t, st.SegmentsRemoved, "compaction ran")
	require.Positive(t, st.Snapshots)
	for i := range n {
		v, err := db.Get(fmt.Appendf(nil, "key-%05d", i))
		switch {
		case i%10 < 3:
			require.ErrorIs(t, err, ErrNotFound)
		case i%10 == 5:
			require.NoError(t, err)
			require.Equal(t, "new", string(v))
		default:
			require.NoError(t, err)
		}
	}
}

// TestExpiryDuringSnapshotKeepsAccounting: item 4. The expirer removed an
// entry after a snapshot had copied it but before the snapshot took its
// live-byte figures; the next Open counted the entry's bytes as dead while
// the entry was back, a later removal subtracted them again ("compaction
// left -N live bytes") and compaction stopped for good. Now the expirer is
// excluded from snapshots, and Verify checks the accounting.
func TestExpiryDuringSnapshotKeepsAccounting(t *testing.T) {
	fs := vfs.NewMem()
	clk := newFakeClock()
	o := clk.opts(lcOpts(fs))
	db, err := Open("/db", o)
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, db.PutTTL(fmt.Appendf(nil, "ttl-%d", i), []byte("x"), time.Minute))
		require.NoError(t, db.Put(fmt.Appendf(nil, "kept-%d", i), []byte("y")))
	}
	require.NoError(t, db.Sync())
	clk.Advance(2 * time.Minute)
	cursors := map[*segFile]*expiryCursor{}
	db.onSnapshotTrailer(func() { db.expirePass(cursors, 1000) })
	require.NoError(t, db.Snapshot())
	db.onSnapshotTrailer(nil)
	require.NoError(t, db.Close())

	requireVerifyOK(t, "/db", o)

	db, err = Open("/db", o)
	require.NoError(t, err)
	removed, _ := db.expirePass(map[*segFile]*expiryCursor{}, 1000)
	require.Equal(t, 50, removed)
	require.NoError(t, db.Compact())
	st, err := db.Stats()
	require.NoError(t, err)
	for _, s := range st.Segments {
		require.GreaterOrEqual(t, s.LiveBytes, int64(0), "%+v", s)
	}
	for i := range 50 {
		_, err := db.Get(fmt.Appendf(nil, "kept-%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, db.Close())
	requireVerifyOK(t, "/db", o)
}

// TestWrongLiveCountDoesNotBlockCompaction: item 4. A segment whose live
// figure is wrong made every pass fail ("compaction ... left -40 live
// bytes"), blocking every later segment. Now the figure is recounted and
// corrected, and the pass goes on.
func TestWrongLiveCountDoesNotBlockCompaction(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs))
	require.NoError(t, err)
	want := lcFill(t, db, 300)
	st, err := db.Stats()
	require.NoError(t, err)
	first := st.Segments[0]
	last := st.Segments[len(st.Segments)-1].Generation
	db.segs[first.ID].Load().live.Add(-40)
	require.NoError(t, db.Compact())
	st, err = db.Stats()
	require.NoError(t, err)
	for _, s := range st.Segments {
		// The active segment (last) had no dead bytes: it stays and
		// receives the copies.
		require.GreaterOrEqual(t, s.Generation, last, "every sealed segment, the miscounted one first, was compacted: %+v", s)
	}
	lcRead(t, db, want, nil)
	require.NoError(t, db.Close())
}

// TestReclaimInsideOperationDoesNotHang: a write that finds no segment id
// compacts to free some, and retiring a segment waits for the operations
// in flight; from inside a View callback (an operation in flight) the
// write must give up after a bound instead of waiting for itself forever.
func TestReclaimInsideOperationDoesNotHang(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", lcOpts(fs)) // no background compactor to race with
	require.NoError(t, err)
	db.opts.CompactionThreshold = 0.5 // but writes may compact (reclaimIDs)
	lcFill(t, db, 300)
	// Leave only the reserved ids free, as if the log were full.
	db.mu.Lock()
	for i, free := 0, db.freeIDsLocked(); free > idForPut; i++ {
		if db.segs[i].Load() == nil && !db.retiring[i] {
			db.retiring[i] = true
			db.usedIDs++
			free--
		}
	}
	db.mu.Unlock()
	old := reclaimWait
	reclaimWait = 50 * time.Millisecond
	t.Cleanup(func() { reclaimWait = old })
	require.NoError(t, db.Sync()) // the value is read from the file, not the write buffer
	require.NoError(t, db.View([]byte("key-0001"), func([]byte) error {
		start := time.Now()
		require.False(t, db.reclaimIDs(idForPut), "the pass cannot finish while this operation is open")
		require.GreaterOrEqual(t, time.Since(start), reclaimWait, "it gave up at the bound")
		return nil
	}))
	require.NoError(t, db.Close()) // waits for the pass, which now finishes
	db, err = Open("/db", lcOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Close())
}

// TestOverwritesNeverFillTheLog: item 2 with compaction on. A writer
// faster than the background compactor (which here runs only when a roll
// kicks it) used to get ErrFull on a log of dead segments; a write that
// finds no segment id now compacts and retries, so ErrFull means live data.
func TestOverwritesNeverFillTheLog(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	skipIDExhaustionUnderRace(t)
	fs := vfs.NewMem()
	o := lcOpts(fs)
	o.CompactionThreshold = 0.5
	o.CompactionInterval = time.Hour
	db, err := Open("/db", o)
	require.NoError(t, err)
	val := bytes.Repeat([]byte("v"), 200)
	rounds := 2.0 // the id space twice over
	if raceEnabled {
		rounds = 1.25 // past it once: the race detector slows compaction tenfold
	}
	for i := range int(rounds * segment.MaxSegments * 4096 / 240) {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i%4), val), "put %d", i)
	}
	require.NoError(t, db.Close())
}

// TestFullLogAfterShrinkingSegments: Compact on a log whose ids are all in
// use must work, even when it holds mostly live segments written with
// larger segments (copying one of those into small segments takes many
// ids for the one it frees) and Open's active segment took an id. Before
// the fix, Open took compaction's last id and Compact copied the big live
// segments first, failing with ErrFull on a log mostly of dead data.
func TestFullLogAfterShrinkingSegments(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	skipIDExhaustionUnderRace(t)
	fs := vfs.NewMem()
	o := lcOpts(fs)
	o.SegmentSize, o.WriteBufferSize = 64<<10, 16<<10
	db, err := Open("/db", o)
	require.NoError(t, err)
	small := bytes.Repeat([]byte("s"), 100)
	for i := range 3000 { // about 5 big segments
		require.NoError(t, db.Put(fmt.Appendf(nil, "live-%05d", i), small))
	}
	for i := 0; i < 3000; i += 4 { // a quarter of them dead: each qualifies
		require.NoError(t, db.Put(fmt.Appendf(nil, "live-%05d", i), small))
	}
	require.NoError(t, db.Close())

	o.SegmentSize, o.WriteBufferSize = 4<<10, 4<<10
	db, err = Open("/db", o)
	require.NoError(t, err)
	val := bytes.Repeat([]byte("v"), 1500)
	var full error
	for i := 0; full == nil; i++ {
		require.Less(t, i, 1<<20, "the log never filled")
		full = db.Put(fmt.Appendf(nil, "hot-%d", i%8), val)
	}
	require.ErrorIs(t, full, ErrFull)
	require.NoError(t, db.Delete([]byte("hot-0")), "a delete is never blocked by a full log")
	require.NoError(t, db.Close())

	db, err = Open("/db", o)
	require.NoError(t, err, "Open works on a full log")
	require.NoError(t, db.Compact())
	require.NoError(t, db.Delete([]byte("hot-1")))
	for i := range 100 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "hot-%d", i), val), "puts work again after compaction")
	}
	for i := range 3000 {
		v, err := db.Get(fmt.Appendf(nil, "live-%05d", i))
		require.NoError(t, err)
		require.Equal(t, small, v)
	}
	require.NoError(t, db.Close())
	requireVerifyOK(t, "/db", o)
}

// TestDeletesOnALiveFullLog: the soak (seed 11503607160595464664) found a
// delete refused with ErrFull on a log full of live data. Deletes had used
// the ids reserved for them; the reclaim pass their write ran then freed a
// few ids (the deleted records' segments), but fewer than a put needs, and
// the write was retried only if a put could have found an id: so the
// delete failed although it now fitted. Every delete must succeed here.
func TestDeletesOnALiveFullLog(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	skipIDExhaustionUnderRace(t)
	opts := lcOpts(vfs.NewMem())
	opts.CompactionThreshold = 0.5
	opts.CompactionInterval = time.Hour // compaction only when a write needs ids
	db, err := Open("/db", opts)
	require.NoError(t, err)
	big := bytes.Repeat([]byte("b"), 1800) // two records a segment
	n := 0
	for ; ; n++ {
		require.Less(t, n, 1<<20, "the log never filled")
		if err := db.Put(fmt.Appendf(nil, "k%d", n), big); err != nil {
			require.ErrorIs(t, err, ErrFull)
			break
		}
	}
	// Nothing is reclaimable (every record is live), so a reclaim frees
	// nothing, but a delete may still take an id: its write is retried.
	require.False(t, db.reclaimIDs(idForPut))
	require.True(t, db.reclaimIDs(idForDelete), "a delete's reclaim said no although a delete fits")
	// Deletes scattered over the log: each frees little, and compaction
	// must copy the survivors of every segment it frees.
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		k := rnd.IntN(n)
		require.NoError(t, db.Delete(fmt.Appendf(nil, "k%d", k)), "delete %d (k%d) of a live-full log", i, k)
	}
	require.NoError(t, db.Put([]byte("again"), big), "puts work once deletes freed space")
	db.mu.Lock()
	require.Equal(t, db.countFreeIDsLocked(), db.freeIDsLocked(), "the free id count kept matches a scan")
	db.mu.Unlock()
	require.NoError(t, db.Close())
}

// TestDeletesOnAFullLogWithCompactionOff: the soak (seed
// 9257852097143333283) had a burst of deletes refused with ErrFull on a
// log full of dead data, opened with background compaction off: the
// deletes used up the ids reserved for them and a write's reclaim pass
// never ran with compaction off. A delete is never blocked by a full log:
// with background compaction off, a delete's write still compacts what it
// needs (puts still get ErrFull, as documented).
func TestDeletesOnAFullLogWithCompactionOff(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	skipIDExhaustionUnderRace(t)
	db, err := Open("/db", lcOpts(vfs.NewMem())) // CompactionThreshold -1
	require.NoError(t, err)
	const keys = 3000
	for i := range keys {
		require.NoError(t, db.Put(fmt.Appendf(nil, "small%d", i), []byte("v")))
	}
	big := bytes.Repeat([]byte("b"), 1800)
	for i := 0; ; i++ {
		require.Less(t, i, 1<<20, "the log never filled")
		if err := db.Put([]byte("big"), big); err != nil {
			require.ErrorIs(t, err, ErrFull, "puts are refused on a full log with compaction off")
			break
		}
	}
	for i := range keys {
		require.NoError(t, db.Delete(fmt.Appendf(nil, "small%d", i)), "delete %d", i)
	}
	st, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Keys)
	require.NoError(t, db.Close())
}

// skipIDExhaustionUnderRace skips a test that fills all 8192 segment ids
// when the race detector runs in -short mode: scanning the id table on
// every roll is instrumented there and such a test takes minutes (200 s
// for one, against 1 s without). make test runs it again, at full length,
// without the race detector; its code is single-goroutine bookkeeping the
// detector has little to say about, and the concurrent tests cover the
// same paths under it.
func skipIDExhaustionUnderRace(t *testing.T) {
	if raceEnabled && testing.Short() {
		t.Skip("fills every segment id: runs without the race detector (make test's second pass)")
	}
}
