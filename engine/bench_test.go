package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Benchmarks use thin records (16-byte keys, 8-byte values) unless said
// otherwise, SyncNone (the peers in DESIGN-NOTES were measured without an
// fsync per write), and the OS filesystem under a temp dir.

func benchKey(dst []byte, i uint64) []byte {
	dst = dst[:16]
	binary.BigEndian.PutUint64(dst, i*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(dst[8:], i)
	return dst
}

func openBench(b *testing.B, o *Options) *DB {
	b.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	o.Sync = SyncNone
	db, err := Open(b.TempDir(), o)
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	return db
}

func loadThin(b *testing.B, db *DB, n, valueSize int) {
	b.Helper()
	var batch Batch
	k := make([]byte, 16)
	v := make([]byte, valueSize)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		for j := 0; j+8 <= len(v); j += 8 {
			binary.LittleEndian.PutUint64(v[j:], rnd.Uint64())
		}
		batch.Put(benchKey(k, uint64(i)), v)
		if batch.Len() == 1000 || i == n-1 {
			require.NoError(b, db.Write(&batch))
			batch.Reset()
		}
	}
}

func BenchmarkPutBatch1000(b *testing.B) { benchPutBatch(b, 8) }

// BenchmarkPutBatch1000Value100 is BenchmarkPutBatch1000 with 100-byte
// values.
func BenchmarkPutBatch1000Value100(b *testing.B) { benchPutBatch(b, 100) }

func benchPutBatch(b *testing.B, valueSize int) {
	db := openBench(b, nil)
	var batch Batch
	k := make([]byte, 16)
	v := make([]byte, valueSize)
	b.SetBytes(int64(16 + valueSize))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch.Put(benchKey(k, uint64(i)), v)
		if batch.Len() == 1000 {
			if err := db.Write(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

func BenchmarkPutParallel(b *testing.B) {
	db := openBench(b, nil)
	var next atomic.Uint64
	b.SetParallelism(1) // GOMAXPROCS goroutines: 2 on the reference machine
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		k := make([]byte, 16)
		v := make([]byte, 8)
		for pb.Next() {
			if err := db.Put(benchKey(k, next.Add(1)), v); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

const benchKeys = 1_000_000

func benchGets(b *testing.B, absent bool) {
	db := openBench(b, nil)
	loadThin(b, db, benchKeys, 8)
	var seed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rnd := rand.New(rand.NewPCG(seed.Add(1), 7))
		k := make([]byte, 16)
		v := make([]byte, 0, 64)
		for pb.Next() {
			i := rnd.Uint64N(benchKeys)
			if absent {
				i += benchKeys
			}
			var err error
			v, err = db.AppendValue(v[:0], benchKey(k, i))
			if absent != (err == ErrNotFound) {
				b.Errorf("key %d: %v", i, err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
}

func BenchmarkGetHit(b *testing.B)  { benchGets(b, false) }
func BenchmarkGetMiss(b *testing.B) { benchGets(b, true) }

// benchEnvInt returns the integer in environment variable name, or def.
func benchEnvInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			return v
		}
	}
	return def
}

// BenchmarkOpen10M measures Open of a database of MARLIN_BENCH_KEYS
// (default 10 million) thin records with a valid snapshot (Close writes
// one): the restart path, snapshot load and a replay of nothing.
func BenchmarkOpen10M(b *testing.B) {
	n := benchEnvInt("MARLIN_BENCH_KEYS", 10_000_000)
	o := &Options{Logger: discardLogger, Sync: SyncNone}
	// MARLIN_BENCH_OPEN_DIR keeps the database between runs (loaded on the
	// first), so that a profile shows Open alone.
	dir := os.Getenv("MARLIN_BENCH_OPEN_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	if _, err := os.Stat(dir + "/MARLIN"); err != nil {
		db, err := Open(dir, o)
		require.NoError(b, err)
		loadThin(b, db, n, 8)
		require.NoError(b, db.Close())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start, cpu0 := time.Now(), cpuTime()
		db, err := Open(dir, o)
		require.NoError(b, err)
		el, cpu := time.Since(start), cpuTime()-cpu0
		st, err := db.Stats()
		require.NoError(b, err)
		require.True(b, st.OpenedFromSnapshot)
		require.Equal(b, int64(n), db.ix.Len())
		b.ReportMetric(el.Seconds(), "open-s")
		b.ReportMetric(cpu.Seconds(), "open-cpu-s")
		b.StopTimer()
		require.NoError(b, db.Close())
		b.StartTimer()
	}
}

// cpuTime returns the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssAnon returns RssAnon from /proc/self/status in bytes (Linux), or 0.
func rssAnon() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkLoad10M is the large run of issue 2: load 10 million records with
// batches of 1000, then random gets of present and absent keys from 2
// goroutines. Run with -bench Load10M -benchtime 1x; MARLIN_BENCH_VALUE sets
// the value size (default 8: thin records), MARLIN_BENCH_KEYS the number of
// records (default 10 million).
func BenchmarkLoad10M(b *testing.B) {
	n := benchEnvInt("MARLIN_BENCH_KEYS", 10_000_000)
	vsize := benchEnvInt("MARLIN_BENCH_VALUE", 8)
	for i := 0; i < b.N; i++ {
		runtime.GC()
		rss0 := rssAnon()
		db := openBench(b, nil)
		start, cpu0 := time.Now(), cpuTime()
		loadThin(b, db, n, vsize)
		load, cpu := time.Since(start), cpuTime()-cpu0
		require.NoError(b, db.Sync())
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss := rssAnon() - rss0
		st, err := db.Stats()
		require.NoError(b, err)
		b.ReportMetric(float64(n)/load.Seconds(), "puts/s")
		// CPU time of the whole process (background workers included) per
		// put: steadier than puts/s on a machine shared with other work.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/put")
		b.ReportMetric(float64(rss)/float64(n), "rssanon-B/key")
		b.ReportMetric(float64(st.Index.ResidentBytes)/float64(n), "index-B/key")
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(st.DiskBytes)/float64(n), "disk-B/key")
		b.ReportMetric(st.Index.LoadFactor, "load")
		for _, absent := range []bool{false, true} {
			const gets = 4_000_000
			var wg sync.WaitGroup
			start = time.Now()
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(uint64(g), 9))
					k := make([]byte, 16)
					v := make([]byte, 0, 256)
					for range gets / 2 {
						i := rnd.Uint64N(uint64(n))
						if absent {
							i += uint64(n)
						}
						var err error
						v, err = db.AppendValue(v[:0], benchKey(k, i))
						if absent != (err == ErrNotFound) {
							b.Errorf("key %d: %v", i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			name := "gets/s"
			if absent {
				name = "miss-gets/s"
			}
			b.ReportMetric(gets/time.Since(start).Seconds(), name)
		}
		require.NoError(b, db.Close())
	}
}
