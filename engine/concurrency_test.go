package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// ---------------------------------------------------------------------------
// Crash consistency: power loss (vfs.MemFS.CrashClone) while writers run.

// crashVal is the value of the i-th write of writer w to key: it names the
// key and the write, and carries filler so that records fill segments.
func crashVal(key string, i int) []byte {
	v := fmt.Appendf(nil, "%s|%d|", key, i)
	return append(v, bytes.Repeat([]byte{byte('a' + i%26)}, 20+i%150)...)
}

// parseCrashVal checks that v is crashVal(key, i) for some i and returns i.
func parseCrashVal(key string, v []byte) (int, error) {
	rest, ok := bytes.CutPrefix(v, []byte(key+"|"))
	if !ok {
		return 0, fmt.Errorf("value %.40q does not name key %q", v, key)
	}
	num, _, ok := bytes.Cut(rest, []byte("|"))
	if !ok {
		return 0, fmt.Errorf("value %.40q of key %q is malformed", v, key)
	}
	i, err := strconv.Atoi(string(num))
	if err != nil {
		return 0, fmt.Errorf("value %.40q of key %q is malformed", v, key)
	}
	if !bytes.Equal(v, crashVal(key, i)) {
		return 0, fmt.Errorf("value of key %q, write %d, is damaged: %.60q", key, i, v)
	}
	return i, nil
}

func crashOpts(fs vfs.FS, sm SyncMode) *Options {
	return &Options{FS: fs, SegmentSize: 16 << 10, WriteBufferSize: 4096, Sync: sm,
		SyncInterval: time.Millisecond, Logger: discardLogger}
}

const (
	crashWriters = 2
	crashKeys    = 40 // keys per writer: writer w's write i goes to key i % crashKeys
)

func crashKey(w, k int) string { return fmt.Sprintf("w%d-k%02d", w, k) }

// runCrashWriters starts crashWriters goroutines that call write(w, i) for
// i = 0, 1, ... until stopped. After write returns nil, i is recorded as
// acknowledged (under mu). Once at least target writes are acknowledged it
// takes a snapshot of the acknowledgements and then the crash clone, while
// the writers keep going; then it stops them. It returns the clone, the
// highest acknowledged i per writer (-1 for none) as of the moment before
// the clone, and the number of writes each writer issued.
func runCrashWriters(t *testing.T, fs *vfs.MemFS, rnd *rand.Rand, target int,
	write func(w, i int) error) (clone *vfs.MemFS, acked [crashWriters]int, issued [crashWriters]int) {
	var (
		mu      sync.Mutex
		ackedBy [crashWriters]int
		total   int
		stop    atomic.Bool
		wg      sync.WaitGroup
		errs    = make(chan error, crashWriters)
	)
	for w := range crashWriters {
		ackedBy[w] = -1
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			for ; !stop.Load(); i++ {
				if err := write(w, i); err != nil {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					break
				}
				mu.Lock()
				ackedBy[w] = i
				total++
				mu.Unlock()
			}
			issued[w] = i
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := total
		all := true // every writer got going
		for _, a := range ackedBy {
			all = all && a >= 0
		}
		mu.Unlock()
		if (n >= target && all) || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-errs:
			stop.Store(true)
			wg.Wait()
			require.NoError(t, err)
		default:
		}
		time.Sleep(50 * time.Microsecond)
	}
	// Every write recorded now had returned before CrashClone starts.
	mu.Lock()
	acked = ackedBy
	mu.Unlock()
	clone = fs.CrashClone(rnd)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return clone, acked, issued
}

func TestCrashCloneGroupCommit(t *testing.T) {
	seeds := 10
	if testing.Short() {
		seeds = 4
	}
	// SyncGroup and SyncAlways acknowledge only durable writes; SyncPeriodic
	// and SyncNone promise nothing for acknowledged writes, but a crash must
	// still leave a consistent prefix of each writer's history.
	for _, sm := range []SyncMode{SyncGroup, SyncAlways, SyncPeriodic, SyncNone} {
		durable := sm == SyncGroup || sm == SyncAlways
		for seed := range uint64(seeds) {
			t.Run(fmt.Sprintf("%v/puts/seed=%d", sm, seed), func(t *testing.T) {
				crashPuts(t, sm, seed, durable)
			})
			t.Run(fmt.Sprintf("%v/batches/seed=%d", sm, seed), func(t *testing.T) {
				crashBatches(t, sm, seed, durable)
			})
		}
	}
}

// crashPuts: each writer overwrites its own keys in sequence. After the
// crash, each writer's keys must show exactly the state after some prefix
// of its writes (recovery keeps a prefix of the log), and that prefix must
// include every write acknowledged before the crash when durable.
func crashPuts(t *testing.T, sm SyncMode, seed uint64, durable bool) {
	fs := vfs.NewMem()
	db, err := Open("/db", crashOpts(fs, sm))
	require.NoError(t, err)
	rnd := rand.New(rand.NewPCG(seed, 0xc4a5))
	target := 50 + rnd.IntN(400)
	clone, acked, issued := runCrashWriters(t, fs, rnd, target, func(w, i int) error {
		k := crashKey(w, i%crashKeys)
		return db.Put([]byte(k), crashVal(k, i))
	})
	st, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.Close())
	t.Logf("seed %d: acked %v, issued %v, %d segments removed by compaction", seed, acked, issued, st.SegmentsRemoved)

	db2, err := Open("/db", crashOpts(clone, sm))
	require.NoError(t, err, "seed %d: open after crash", seed)
	defer db2.Close()
	for w := range crashWriters {
		// last = the highest write of w that survived.
		last := -1
		for k := range crashKeys {
			key := crashKey(w, k)
			v, err := db2.Get([]byte(key))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			require.NoError(t, err, "seed %d: key %s", seed, key)
			i, err := parseCrashVal(key, v)
			require.NoError(t, err, "seed %d", seed)
			require.Equal(t, k, i%crashKeys, "seed %d: key %s holds write %d", seed, key, i)
			require.Less(t, i, issued[w], "seed %d: key %s holds a write never issued", seed, key)
			last = max(last, i)
		}
		if durable {
			require.GreaterOrEqual(t, last, acked[w],
				"seed %d, %v: writer %d's acknowledged write %d was lost in the crash", seed, sm, w, acked[w])
		}
		// Prefix: every key holds the latest write <= last to it.
		for k := range crashKeys {
			key := crashKey(w, k)
			want := -1
			if last >= k {
				want = last - (last-k)%crashKeys
			}
			v, err := db2.Get([]byte(key))
			if want < 0 {
				require.ErrorIs(t, err, ErrNotFound, "seed %d: key %s: writes up to %d survived", seed, key, last)
				continue
			}
			require.NoError(t, err, "seed %d: key %s lost write %d although write %d survived", seed, key, want, last)
			i, _ := parseCrashVal(key, v)
			require.Equal(t, want, i, "seed %d: key %s: not a prefix of writer %d's history (last surviving write %d)", seed, key, w, last)
		}
	}
	// The recovered DB takes writes and keeps them.
	require.NoError(t, db2.Put([]byte("after"), []byte("crash")))
	require.NoError(t, db2.Close())
	db3, err := Open("/db", crashOpts(clone, sm))
	require.NoError(t, err)
	v, err := db3.Get([]byte("after"))
	require.NoError(t, err)
	require.Equal(t, "crash", string(v))
	require.NoError(t, db3.Close())
}

const crashBatchSize = 10

// crashBatches: batch i of writer w puts 10 keys of its own, each with a
// value naming the batch, and deletes the keys of batch i-3. After a crash,
// each batch's keys are all there or all absent, and the surviving batches
// form a prefix of the writer's batches.
func crashBatches(t *testing.T, sm SyncMode, seed uint64, durable bool) {
	fs := vfs.NewMem()
	db, err := Open("/db", crashOpts(fs, sm))
	require.NoError(t, err)
	rnd := rand.New(rand.NewPCG(seed, 0xba7c))
	target := 20 + rnd.IntN(150)
	const keep = 3 // batch i deletes the keys of batch i-keep
	bkey := func(w, i, j int) string { return fmt.Sprintf("w%d-b%05d-%d", w, i, j) }
	clone, acked, issued := runCrashWriters(t, fs, rnd, target, func(w, i int) error {
		var b Batch
		for j := range crashBatchSize {
			k := bkey(w, i, j)
			b.Put([]byte(k), crashVal(k, i))
		}
		if i >= keep {
			for j := range crashBatchSize {
				b.Delete([]byte(bkey(w, i-keep, j)))
			}
		}
		return db.Write(&b)
	})
	st, err := db.Stats()
	require.NoError(t, err)
	require.NoError(t, db.Close())
	t.Logf("seed %d: acked %v, issued %v, %d segments removed by compaction", seed, acked, issued, st.SegmentsRemoved)

	db2, err := Open("/db", crashOpts(clone, sm))
	require.NoError(t, err, "seed %d: open after crash", seed)
	defer db2.Close()
	for w := range crashWriters {
		// Batch i was applied iff its keys are there, or batch i+keep, which
		// deletes them, was applied.
		applied := make([]bool, issued[w])
		present := make([]bool, issued[w])
		for i := range issued[w] {
			n := 0
			for j := range crashBatchSize {
				k := bkey(w, i, j)
				v, err := db2.Get([]byte(k))
				if errors.Is(err, ErrNotFound) {
					continue
				}
				require.NoError(t, err)
				bi, err := parseCrashVal(k, v)
				require.NoError(t, err)
				require.Equal(t, i, bi)
				n++
			}
			require.True(t, n == 0 || n == crashBatchSize,
				"seed %d, %v: writer %d's batch %d is torn: %d of %d keys survived", seed, sm, w, i, n, crashBatchSize)
			present[i] = n == crashBatchSize
		}
		last := -1
		for i := issued[w] - 1; i >= 0; i-- {
			applied[i] = present[i] || (i+keep < issued[w] && applied[i+keep])
			if applied[i] && last < 0 {
				last = i
			}
		}
		for i := range issued[w] {
			require.Equal(t, i <= last, applied[i],
				"seed %d, %v: writer %d: batch %d applied=%v but batch %d survived (not a prefix)", seed, sm, w, i, applied[i], last)
			// A batch is present iff it survived and its deleter did not.
			require.Equal(t, i <= last && i+keep > last, present[i],
				"seed %d, %v: writer %d: batch %d presence (last surviving batch %d)", seed, sm, w, i, last)
		}
		if durable {
			require.GreaterOrEqual(t, last, acked[w],
				"seed %d, %v: writer %d's acknowledged batch %d was lost in the crash", seed, sm, w, acked[w])
		}
	}
	st, err = db2.Stats()
	require.NoError(t, err)
	var keys int64
	require.NoError(t, db2.ForEach(func(k, v []byte) error { keys++; return nil }))
	require.Equal(t, keys, st.Keys)
}

// ---------------------------------------------------------------------------
// Concurrent readers, writers and iterators.

func stableKey(i int) []byte { return fmt.Appendf(nil, "stable-%05d", i) }
func stableVal(i int) []byte {
	return append(fmt.Appendf(nil, "stable-value-%d|", i), bytes.Repeat([]byte{byte(i)}, i%97)...)
}

func churnKey(w, k int) string { return fmt.Sprintf("churn-w%d-%03d", w, k) }

const (
	concWriters   = 4
	concReaders   = 4
	concStable    = 2000
	concChurnKeys = 300
)

// checkConcValue checks a value read for key k: exact for stable keys,
// well-formed and not newer than the writer has issued for churn keys.
func checkConcValue(k, v []byte, issued *[concWriters]atomic.Int64) error {
	if bytes.HasPrefix(k, []byte("stable-")) {
		i, err := strconv.Atoi(string(k[len("stable-"):]))
		if err != nil || i >= concStable {
			return fmt.Errorf("unexpected key %q", k)
		}
		if !bytes.Equal(v, stableVal(i)) {
			return fmt.Errorf("stable key %q has value %.40q", k, v)
		}
		return nil
	}
	var w, kk int
	if _, err := fmt.Sscanf(string(k), "churn-w%d-%03d", &w, &kk); err != nil || w < 0 || w >= concWriters {
		return fmt.Errorf("unexpected key %q", k)
	}
	seq, err := parseCrashVal(string(k), v)
	if err != nil {
		return err
	}
	if int64(seq) > issued[w].Load() {
		return fmt.Errorf("key %q holds write %d, beyond the %d issued", k, seq, issued[w].Load())
	}
	return nil
}

func TestConcurrentReadersWritersIterator(t *testing.T) {
	for _, sm := range []SyncMode{SyncNone, SyncGroup} {
		t.Run(sm.String(), func(t *testing.T) { runConcurrent(t, sm) })
	}
}

func runConcurrent(t *testing.T, sm SyncMode) {
	dur := 900 * time.Millisecond
	maxOps := 25000 // per writer; bounds the log (segments are never reclaimed)
	if testing.Short() {
		dur, maxOps = 300*time.Millisecond, 8000
	}
	fs := vfs.NewMem()
	opts := &Options{FS: fs, SegmentSize: 64 << 10, WriteBufferSize: 4096, Sync: sm,
		SyncInterval: 2 * time.Millisecond, Logger: discardLogger}
	db, err := Open("/db", opts)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()

	var b Batch
	for i := range concStable {
		b.Put(stableKey(i), stableVal(i))
		if b.Len() == 100 {
			require.NoError(t, db.Write(&b))
			b.Reset()
		}
	}

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		errMu   sync.Mutex
		errs    []error
		issued  [concWriters]atomic.Int64 // highest write number issued per writer
		final   [concWriters]map[string][]byte
		writing sync.WaitGroup
		reads   atomic.Int64
		passes  atomic.Int64
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
		stop.Store(true)
	}
	deadline := time.Now().Add(dur)

	for w := range concWriters {
		wg.Add(1)
		writing.Add(1)
		go func() {
			defer wg.Done()
			defer writing.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 99))
			state := map[string][]byte{} // this writer's keys, as written
			final[w] = state
			seq := 0
			next := func(k string) []byte {
				seq++
				issued[w].Store(int64(seq))
				return crashVal(k, seq)
			}
			for op := 0; op < maxOps && !stop.Load() && time.Now().Before(deadline); op++ {
				k := churnKey(w, rnd.IntN(concChurnKeys))
				var err error
				switch p := rnd.IntN(10); {
				case p < 5:
					v := next(k)
					if err = db.Put([]byte(k), v); err == nil {
						state[k] = v
					}
				case p < 7:
					if err = db.Delete([]byte(k)); err == nil {
						delete(state, k)
					}
				case p < 9:
					var b Batch
					upd := map[string][]byte{}
					for range 1 + rnd.IntN(6) {
						k := churnKey(w, rnd.IntN(concChurnKeys))
						if rnd.IntN(4) == 0 {
							b.Delete([]byte(k))
							upd[k] = nil
						} else {
							v := next(k)
							b.Put([]byte(k), v)
							upd[k] = v
						}
					}
					if err = db.Write(&b); err == nil {
						for k, v := range upd {
							if v == nil {
								delete(state, k)
							} else {
								state[k] = v
							}
						}
					}
				default:
					if w == 0 && rnd.IntN(20) == 0 {
						err = db.Sync()
					} else {
						v := next(k)
						if err = db.Put([]byte(k), v); err == nil {
							state[k] = v
						}
					}
				}
				if err != nil {
					fail(fmt.Errorf("writer %d: %w", w, err))
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { writing.Wait(); close(done) }()
	running := func() bool {
		select {
		case <-done:
			return false
		default:
			return !stop.Load()
		}
	}

	for r := range concReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 7))
			var buf []byte
			for running() {
				reads.Add(1)
				if rnd.IntN(2) == 0 {
					i := rnd.IntN(concStable)
					k := stableKey(i)
					var v []byte
					var err error
					switch rnd.IntN(4) {
					case 0:
						v, err = db.Get(k)
					case 1:
						buf, err = db.AppendValue(buf[:0], k)
						v = buf
					case 2:
						err = db.View(k, func(val []byte) error {
							if !bytes.Equal(val, stableVal(i)) {
								return fmt.Errorf("View of stable key %q: %.40q", k, val)
							}
							v = stableVal(i)
							return nil
						})
					default:
						var ok bool
						ok, err = db.Has(k)
						if err == nil && !ok {
							err = fmt.Errorf("Has(%q) = false for a stable key", k)
						}
						v = stableVal(i)
					}
					if err != nil {
						fail(fmt.Errorf("reader %d: stable key %q: %w", r, k, err))
						return
					}
					if !bytes.Equal(v, stableVal(i)) {
						fail(fmt.Errorf("reader %d: stable key %q: got %.40q", r, k, v))
						return
					}
					continue
				}
				k := []byte(churnKey(rnd.IntN(concWriters), rnd.IntN(concChurnKeys)))
				var err error
				if rnd.IntN(2) == 0 {
					var v []byte
					v, err = db.Get(k)
					if err == nil {
						err = checkConcValue(k, v, &issued)
					}
				} else {
					err = db.View(k, func(v []byte) error { return checkConcValue(k, v, &issued) })
				}
				if err != nil && !errors.Is(err, ErrNotFound) {
					fail(fmt.Errorf("reader %d: churn key %q: %w", r, k, err))
					return
				}
			}
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		for running() {
			seen := make(map[string]bool, concStable+concWriters*concChurnKeys)
			stable := 0
			err := db.ForEach(func(k, v []byte) error {
				if seen[string(k)] {
					return fmt.Errorf("key %q twice in one pass", k)
				}
				seen[string(k)] = true
				if bytes.HasPrefix(k, []byte("stable-")) {
					stable++
				}
				return checkConcValue(k, v, &issued)
			})
			if err == nil && stable != concStable {
				err = fmt.Errorf("pass saw %d of %d stable keys", stable, concStable)
			}
			if err != nil {
				fail(fmt.Errorf("iterator: %w", err))
				return
			}
			passes.Add(1)
		}
	}()

	// Full compaction passes, on top of the background compactor, so that
	// segments are rewritten and removed under the readers and iterator.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for running() {
			if err := db.Compact(); err != nil {
				fail(fmt.Errorf("compact: %w", err))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	wg.Add(1)
	go func() {
		defer wg.Done()
		for running() {
			st, err := db.Stats()
			if err != nil {
				fail(fmt.Errorf("stats: %w", err))
				return
			}
			if st.Keys < concStable {
				fail(fmt.Errorf("stats: %d keys, fewer than the %d stable ones", st.Keys, concStable))
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	wg.Wait()
	require.Empty(t, errs)
	st, err := db.Stats()
	require.NoError(t, err)
	t.Logf("%d reads, %d iterator passes, %d segments, %d rolls, %d segments removed by compaction, %d keys",
		reads.Load(), passes.Load(), len(st.Segments), st.Rolls, st.SegmentsRemoved, st.Keys)
	require.Greater(t, st.Rolls, int64(0), "no segment roll happened during the run")
	require.Greater(t, passes.Load(), int64(0))

	// The final state is exactly what the writers last wrote, before and
	// after a reopen.
	want := map[string][]byte{}
	for i := range concStable {
		want[string(stableKey(i))] = stableVal(i)
	}
	for w := range concWriters {
		for k, v := range final[w] {
			want[k] = v
		}
	}
	check := func(db *DB) {
		got := map[string][]byte{}
		require.NoError(t, db.ForEach(func(k, v []byte) error {
			got[string(k)] = bytes.Clone(v)
			return nil
		}))
		require.Equal(t, len(want), len(got))
		for k, v := range want {
			require.True(t, bytes.Equal(v, got[k]), "key %q", k)
		}
		st, err := db.Stats()
		require.NoError(t, err)
		require.EqualValues(t, len(want), st.Keys)
	}
	check(db)
	require.NoError(t, db.Close())
	db, err = Open("/db", opts)
	require.NoError(t, err)
	check(db)
}
