package engine

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/vfs"
)

// coldValue is key i's value in the cold-read tests: sizes chosen so that
// records are thin, straddle 4 KiB blocks, or are large (up to 200 KiB,
// far more than the first 4 KiB read).
func coldValue(i, round int) []byte {
	var n int
	switch i % 7 {
	case 0:
		n = 8
	case 1:
		n = 4090
	case 2:
		n = 5000 + i%13
	case 3:
		n = 200 << 10
	case 4:
		n = 0
	default:
		n = 30 + i%50
	}
	v := make([]byte, n)
	for j := range v {
		v[j] = byte(i*31 + j + round)
	}
	return v
}

// fillCold writes keys with coldValue values, overwrites and deletes some
// and gives some a TTL, so that segments are sealed with every kind of
// record. It returns the expected contents.
func fillCold(t *testing.T, db *DB, n int) map[string][]byte {
	want := map[string][]byte{}
	for i := range n {
		k := fmt.Sprintf("key-%d", i)
		v := coldValue(i, 0)
		if i%5 == 0 {
			require.NoError(t, db.PutTTL([]byte(k), v, time.Hour))
		} else {
			require.NoError(t, db.Put([]byte(k), v))
		}
		want[k] = v
	}
	for i := 0; i < n; i += 4 {
		k := fmt.Sprintf("key-%d", i)
		v := coldValue(i, 1)
		require.NoError(t, db.Put([]byte(k), v))
		want[k] = v
	}
	for i := 0; i < n; i += 9 {
		k := fmt.Sprintf("key-%d", i)
		require.NoError(t, db.Delete([]byte(k)))
		delete(want, k)
	}
	return want
}

func coldOpts(fs vfs.FS, mode ReadMode) *Options {
	o := testOpts(fs)
	o.SegmentSize = 1 << 20
	o.MaxValueSize = 256 << 10
	o.ReadMode = mode
	o.CompactionThreshold = -1
	return o
}

// checkContents reads every key (and some absent ones) with Get, View and
// Has and compares with want.
func checkContents(t *testing.T, db *DB, want map[string][]byte, n int) {
	t.Helper()
	for i := range n + 10 {
		k := []byte(fmt.Sprintf("key-%d", i))
		w, present := want[string(k)]
		v, err := db.Get(k)
		if !present {
			require.ErrorIs(t, err, ErrNotFound, "%s", k)
			has, err := db.Has(k)
			require.NoError(t, err)
			require.False(t, has, "%s", k)
			continue
		}
		require.NoError(t, err, "%s", k)
		require.True(t, bytes.Equal(w, v), "%s: value differs (%d bytes, want %d)", k, len(v), len(w))
		require.NoError(t, db.View(k, func(v []byte) error {
			if !bytes.Equal(w, v) {
				return fmt.Errorf("%s: View value differs", k)
			}
			return nil
		}))
		has, err := db.Has(k)
		require.NoError(t, err)
		require.True(t, has, "%s", k)
	}
}

// TestPreadMatchesMmap: every read mode gives the same answers, before and
// after a reopen, on the OS and the memory filesystem; the pread mode
// really reads with pread and the mmap mode never does.
func TestPreadMatchesMmap(t *testing.T) {
	const n = 300
	for _, fsName := range []string{"os", "mem"} {
		for _, mode := range []ReadMode{ReadMmap, ReadPread, ReadAuto} {
			t.Run(fsName+"/"+mode.String(), func(t *testing.T) {
				var fs vfs.FS = vfs.NewMem()
				dir := "/db"
				if fsName == "os" {
					fs, dir = vfs.Default, t.TempDir()
				}
				db, err := Open(dir, coldOpts(fs, mode))
				require.NoError(t, err)
				want := fillCold(t, db, n)
				checkContents(t, db, want, n)
				require.NoError(t, db.Close())
				db, err = Open(dir, coldOpts(fs, mode))
				require.NoError(t, err)
				defer db.Close()
				st0, err := db.Stats()
				require.NoError(t, err)
				checkContents(t, db, want, n)
				st1, err := db.Stats()
				require.NoError(t, err)
				preads := st1.Sub(st0).PreadReads
				switch mode {
				case ReadMmap, ReadAuto: // a small DB: auto reads through the mapping
					require.Zero(t, preads)
				case ReadPread:
					require.Greater(t, preads, int64(n))
				}
			})
		}
	}
}

// dropSegmentCache evicts db's segment files from the page cache (they
// are synced and clean after a reopen). Pages mapped into this process
// are not evicted, so the mappings drop theirs first (MADV_DONTNEED on a
// shared file mapping only unmaps; the file's data is unchanged).
func dropSegmentCache(t *testing.T, db *DB) {
	t.Helper()
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil && len(sf.data) > 0 {
			require.NoError(t, unix.Madvise(sf.data, unix.MADV_DONTNEED))
		}
	}
	db.cold.epoch.Add(1) // forget the residency memo, as a roll would
	st, err := db.Stats()
	require.NoError(t, err)
	for _, s := range st.Segments {
		f, err := os.Open(s.Name)
		require.NoError(t, err)
		require.NoError(t, f.Sync())
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		if err != nil {
			t.Skipf("fadvise: %v", err)
		}
	}
}

// TestAutoReadsColdWithPread: in ReadAuto, a large database's records that
// are not in the page cache are read with pread, and resident ones through
// the mapping.
func TestAutoReadsColdWithPread(t *testing.T) {
	const n = 300
	dir := t.TempDir()
	db, err := Open(dir, coldOpts(vfs.Default, ReadAuto))
	require.NoError(t, err)
	want := fillCold(t, db, n)
	require.NoError(t, db.Close())
	db, err = Open(dir, coldOpts(vfs.Default, ReadAuto))
	require.NoError(t, err)
	defer db.Close()
	db.cold.limit = 0 // "larger than memory"
	db.mu.Lock()
	db.noteSizeLocked()
	db.mu.Unlock()
	require.True(t, db.cold.big.Load())

	dropSegmentCache(t, db)
	// key-2's 5000-byte record ends on the page where key-3's 200 KiB
	// record starts: reading key-2 makes key-3's first page resident, but
	// not the rest of it, which must be preaded too, not faulted in.
	before := db.cold.preads.Load()
	for _, k := range []string{"key-2", "key-3"} {
		v, err := db.Get([]byte(k))
		require.NoError(t, err)
		require.Equal(t, want[k], v)
	}
	require.EqualValues(t, 2, db.cold.preads.Load()-before)

	dropSegmentCache(t, db)
	before = db.cold.preads.Load()
	checkContents(t, db, want, n)
	cold := db.cold.preads.Load() - before
	// Thin records share pages (one pread brings in its neighbours), so
	// fewer preads than keys.
	require.Greater(t, cold, int64(n/4), "cold records were not preaded")

	// pread fills the page cache too: the same reads are now resident and
	// go through the mapping, and the residency memo knows their pages
	// (those preaded, or found by mincore) without asking the OS again.
	before = db.cold.preads.Load()
	checkContents(t, db, want, n)
	require.Less(t, db.cold.preads.Load()-before, cold/4, "resident records were preaded")
	mc := db.cold.mincores.Load()
	checkContents(t, db, want, n)
	require.Zero(t, db.cold.mincores.Load()-mc, "mincore asked about pages the memo knows")

	// Once the memo is forgotten (a roll, or residencyTTL of preads), the
	// pages are checked again.
	db.cold.epoch.Add(1)
	checkContents(t, db, want, n)
	require.Greater(t, db.cold.mincores.Load()-mc, int64(n/4))
}

// TestAutoSmallDBTurnsColdAndBack: in ReadAuto a database that fits in
// memory reads through the mapping, checking only a sample of reads;
// once a sampled read finds its page missing (the cache was dropped), every
// read is checked and cold records are preaded, and once the pages are
// back and reads stop missing, it returns to unchecked reads.
func TestAutoSmallDBTurnsColdAndBack(t *testing.T) {
	const n = 300
	dir := t.TempDir()
	db, err := Open(dir, coldOpts(vfs.Default, ReadAuto))
	require.NoError(t, err)
	want := fillCold(t, db, n)
	require.NoError(t, db.Close())
	db, err = Open(dir, coldOpts(vfs.Default, ReadAuto))
	require.NoError(t, err)
	defer db.Close()
	require.False(t, db.cold.big.Load(), "a 1 MiB database is larger than half of memory")

	// Cached: no read is preaded, and the sampled checks (every read here)
	// keep finding their pages.
	db.cold.sample = 1
	checkContents(t, db, want, n)
	require.False(t, db.cold.faulting.Load())
	require.False(t, db.coldProbes())
	before := db.cold.preads.Load()
	checkContents(t, db, want, n)
	require.Zero(t, db.cold.preads.Load()-before)

	dropSegmentCache(t, db)
	checkContents(t, db, want, n)
	require.True(t, db.cold.faulting.Load(), "a read of a dropped page did not turn the cold checks on")
	require.True(t, db.coldProbes(), "cold writes do not probe outside db.mu")
	require.Greater(t, db.cold.preads.Load()-before, int64(n/4), "cold records were not preaded")

	// Everything is resident again: within two windows of checks the
	// database stops checking every read.
	db.cold.sample = 1 << 30
	for i := 0; db.cold.faulting.Load(); i++ {
		require.Less(t, i, 2*faultWindow/n+2, "still checking every read after %d rounds", i)
		checkContents(t, db, want, n)
	}
	before = db.cold.preads.Load()
	mc := db.cold.mincores.Load()
	checkContents(t, db, want, n)
	require.Zero(t, db.cold.preads.Load()-before)
	require.Zero(t, db.cold.mincores.Load()-mc)
}

// TestPreadReadError: a failed pread is an ErrIO error naming the file and
// offset, not a panic; other keys (in other segments) still read, and the
// same key reads again once the disk answers.
func TestPreadReadError(t *testing.T) {
	fs := vfs.NewMem()
	var failing sync.Map // segment file name -> true
	efs := vfs.NewErrorFS(fs, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if _, ok := failing.Load(name); ok && op == vfs.OpRead {
			return vfs.ErrInjectedIO
		}
		return nil
	}))
	o := coldOpts(efs, ReadPread)
	o.SegmentSize = 64 << 10
	o.MaxValueSize = 8 << 10
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	val := make([]byte, 1000)
	for i := range 200 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), val))
	}
	require.NoError(t, db.Sync())
	st, err := db.Stats()
	require.NoError(t, err)
	require.Greater(t, len(st.Segments), 2)
	first := st.Segments[0]
	for _, s := range st.Segments {
		if s.Generation < first.Generation {
			first = s
		}
	}
	failing.Store(first.Name, true)

	_, err = db.Get([]byte("k0"))
	require.ErrorIs(t, err, ErrIO)
	require.ErrorIs(t, err, vfs.ErrInjected)
	require.ErrorContains(t, err, first.Name)
	require.ErrorContains(t, err, "at offset")
	err = db.View([]byte("k0"), func([]byte) error { t.Fatal("fn called for an unreadable value"); return nil })
	require.ErrorIs(t, err, ErrIO)
	_, err = db.Has([]byte("k0"))
	require.ErrorIs(t, err, ErrIO)
	// An overwrite must not guess: the old record cannot be compared.
	require.ErrorIs(t, db.Put([]byte("k0"), []byte("new")), ErrIO)

	v, err := db.Get([]byte("k199")) // in a later segment
	require.NoError(t, err)
	require.Len(t, v, 1000)
	require.NoError(t, db.Put([]byte("k199"), []byte("x")))

	failing.Delete(first.Name)
	v, err = db.Get([]byte("k0"))
	require.NoError(t, err)
	require.Len(t, v, 1000)
}

// TestPreadTruncatedFile: a segment file cut underneath the DB reads as
// ErrIO in pread mode as in mmap mode (there a fault).
func TestPreadTruncatedFile(t *testing.T) {
	dir := t.TempDir()
	o := &Options{FS: vfs.Default, SegmentSize: 64 << 10, Sync: SyncNone, Logger: discardLogger,
		CompactionThreshold: -1, ExpiryInterval: -1, ReadMode: ReadPread}
	db, err := Open(dir, o)
	require.NoError(t, err)
	val := make([]byte, 1000)
	for i := range 150 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), val))
	}
	require.NoError(t, db.Close())
	db, err = Open(dir, o)
	require.NoError(t, err)
	defer db.Close()
	st, err := db.Stats()
	require.NoError(t, err)
	seg := st.Segments[0]
	for _, s := range st.Segments {
		if s.Generation < seg.Generation {
			seg = s
		}
	}
	require.NoError(t, os.Truncate(seg.Name, 8192))
	_, err = db.Get([]byte("k30"))
	require.ErrorIs(t, err, ErrIO)
	require.ErrorContains(t, err, seg.Name)
	require.True(t, strings.Contains(err.Error(), "at offset"), err)
	_, err = db.Get([]byte("k0"))
	require.NoError(t, err)
}

// TestColdUpdatesConcurrent: writers overwrite and delete keys whose old
// records are read with pread (probeCold before db.mu), many at once,
// while readers check that every value read is one that was written for
// the key; at the end every key holds its last write, also after a
// reopen. Run with -race.
func TestColdUpdatesConcurrent(t *testing.T) {
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir := "/db"
			if fsName == "os" {
				fs, dir = vfs.Default, t.TempDir()
			}
			o := coldOpts(fs, ReadPread)
			o.SegmentSize = 128 << 10
			o.MaxValueSize = 16 << 10
			o.CompactionThreshold = 0.3 // compaction moves entries meanwhile
			o.CompactionInterval = 10 * time.Millisecond
			db, err := Open(dir, o)
			require.NoError(t, err)
			const keys, writers, ops = 64, 16, 150
			// Key k is written only by writer k%writers, so its final state is
			// that writer's last op; values name key, writer and op.
			val := func(k, op int) []byte {
				v := fmt.Appendf(nil, "k%d-op%d-", k, op)
				return append(v, bytes.Repeat([]byte{'x'}, (k*37+(op+1)*11)%3000)...)
			}
			key := func(k int) []byte { return fmt.Appendf(nil, "key-%d", k) }
			for k := range keys {
				require.NoError(t, db.Put(key(k), val(k, -1)))
			}
			final := make([][]byte, keys) // nil: deleted
			var wg sync.WaitGroup
			errc := make(chan error, writers+4)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					for op := range ops {
						k := w + writers*rng.IntN(keys/writers)
						if rng.IntN(4) == 0 {
							if err := db.Delete(key(k)); err != nil {
								errc <- err
								return
							}
							final[k] = nil
							continue
						}
						v := val(k, op)
						if err := db.Put(key(k), v); err != nil {
							errc <- err
							return
						}
						final[k] = v
					}
				}()
			}
			stop := make(chan struct{})
			var rg sync.WaitGroup
			for r := range 4 {
				rg.Add(1)
				go func() {
					defer rg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := (i*7 + r) % keys
						v, err := db.Get(key(k))
						if errors.Is(err, ErrNotFound) {
							continue
						}
						if err != nil {
							errc <- err
							return
						}
						if !bytes.HasPrefix(v, fmt.Appendf(nil, "k%d-op", k)) {
							errc <- fmt.Errorf("key %d read %.20q", k, v)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			rg.Wait()
			close(errc)
			for err := range errc {
				require.NoError(t, err)
			}
			check := func(db *DB) {
				n := 0
				for k := range keys {
					v, err := db.Get(key(k))
					if final[k] == nil {
						require.ErrorIs(t, err, ErrNotFound, "key %d", k)
						continue
					}
					n++
					require.NoError(t, err, "key %d", k)
					require.Equal(t, final[k], v, "key %d", k)
				}
				st, err := db.Stats()
				require.NoError(t, err)
				require.EqualValues(t, n, st.Keys, "one index entry per live key")
			}
			check(db)
			require.Greater(t, db.cold.reused.Load(), int64(writers*ops/4), "unlocked probes were rarely reused")
			require.NoError(t, db.Close())
			db, err = Open(dir, o)
			require.NoError(t, err)
			defer db.Close()
			check(db)
		})
	}
}

// TestColdProbeStale: an unlocked probe whose candidates changed before
// the writer took db.mu is not trusted (validateLocked), so the write
// takes the locked probe and still finds the key.
func TestColdProbeStale(t *testing.T) {
	db, err := Open("/db", coldOpts(vfs.NewMem(), ReadPread))
	require.NoError(t, err)
	defer db.Close()
	k := []byte("k")
	require.NoError(t, db.Put(k, []byte("v1")))
	h := db.hash(k)
	p := db.probeCold(h, k)
	require.True(t, p.valid)
	require.True(t, p.e.found)
	db.mu.Lock()
	e, ok := db.validateLocked(h, &p)
	db.mu.Unlock()
	require.True(t, ok)
	require.Equal(t, p.e, e)

	require.NoError(t, db.Put(k, []byte("v2"))) // moves the entry
	db.mu.Lock()
	_, ok = db.validateLocked(h, &p)
	db.mu.Unlock()
	require.False(t, ok, "a probe of a moved entry was reused")

	require.NoError(t, db.Delete(k))
	p = db.probeCold(h, k)
	require.True(t, p.valid)
	require.False(t, p.e.found)
	require.NoError(t, db.Put(k, []byte("v3"))) // a new entry appears
	db.mu.Lock()
	_, ok = db.validateLocked(h, &p)
	db.mu.Unlock()
	require.False(t, ok, "a probe that missed a new entry was reused")
}

func TestReadModeOption(t *testing.T) {
	for _, s := range []string{"auto", "mmap", "pread"} {
		m, err := ParseReadMode(s)
		require.NoError(t, err)
		require.Equal(t, s, m.String())
	}
	_, err := ParseReadMode("fast")
	require.ErrorIs(t, err, ErrBadOptions)
	_, err = Open("/db", &Options{FS: vfs.NewMem(), ReadMode: ReadPread + 1})
	require.ErrorIs(t, err, ErrBadOptions)
}

// TestColdUpdatesShared: writers race on the same few keys (puts and
// deletes), so entries often change between a write's unlocked probe and
// its lock. A probe reused after a change would leave a second entry for a
// key or point it at a superseded record. At the end each key must hold
// some writer's last write for it (the linearization's last), the index
// must hold one entry per present key, and a reopen must agree.
func TestColdUpdatesShared(t *testing.T) {
	o := coldOpts(vfs.NewMem(), ReadPread)
	o.SegmentSize = 128 << 10
	o.MaxValueSize = 16 << 10
	db, err := Open("/db", o)
	require.NoError(t, err)
	hook := func() { time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) }
	db.cold.probeHook.Store(&hook)
	const keys, writers, ops = 4, 8, 400
	key := func(k int) []byte { return fmt.Appendf(nil, "key-%d", k) }
	type last struct {
		set bool
		v   []byte // nil: deleted
	}
	lasts := make([][keys]last, writers)
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for op := range ops {
				k := rng.IntN(keys)
				if rng.IntN(3) == 0 {
					if err := db.Delete(key(k)); err != nil {
						errc <- err
						return
					}
					lasts[w][k] = last{set: true}
					continue
				}
				v := fmt.Appendf(nil, "w%d-op%d-%s", w, op, bytes.Repeat([]byte{'v'}, op%700))
				if err := db.Put(key(k), v); err != nil {
					errc <- err
					return
				}
				lasts[w][k] = last{set: true, v: v}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}
	check := func(db *DB) map[int][]byte {
		got := map[int][]byte{}
		for k := range keys {
			v, err := db.Get(key(k))
			if errors.Is(err, ErrNotFound) {
				v = nil
			} else {
				require.NoError(t, err)
				got[k] = v
			}
			ok := false
			for w := range writers {
				if l := lasts[w][k]; l.set && bytes.Equal(l.v, v) && (l.v == nil) == (v == nil) {
					ok = true
				}
			}
			require.True(t, ok, "key %d holds %.12q, no writer's last write", k, v)
		}
		st, err := db.Stats()
		require.NoError(t, err)
		require.EqualValues(t, len(got), st.Keys, "one index entry per present key")
		return got
	}
	before := check(db)
	require.NoError(t, db.Close())
	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, before, check(db))
}

// TestAdviseNoWarnings: the access hints (madvise, fadvise) of creating,
// recovering, replaying and compacting segments all succeed on the OS
// filesystem: none logs a warning (a hint on a segment compaction has
// closed did, before the fix).
func TestAdviseNoWarnings(t *testing.T) {
	var logBuf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logBuf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := t.TempDir()
	o := coldOpts(vfs.Default, ReadAuto)
	o.SegmentSize = 64 << 10
	o.MaxValueSize = 8 << 10
	o.Logger = logger
	o.DisableSnapshots = true // reopen replays every segment
	db, err := Open(dir, o)
	require.NoError(t, err)
	for i := range 400 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i%50), make([]byte, 1000)))
	}
	require.NoError(t, db.Compact())
	require.NoError(t, db.Close())
	db, err = Open(dir, o)
	require.NoError(t, err)
	require.NoError(t, db.Compact())
	require.NoError(t, db.Close())
	st := func() string { mu.Lock(); defer mu.Unlock(); return logBuf.String() }()
	require.NotContains(t, st, "advise")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
