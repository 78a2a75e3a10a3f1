package engine

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkGetReadMode compares Get through the mapping with Get through
// pread on a small, cached DB: the cost of the pread path when the data is
// in the page cache (a system call and a copy per Get), which is what
// ReadAuto avoids by checking residency first. ns/op is per Get, from 8
// goroutines.
func BenchmarkGetReadMode(b *testing.B) {
	const n = 200_000
	for _, mode := range []ReadMode{ReadMmap, ReadPread, ReadAuto} {
		b.Run(mode.String(), func(b *testing.B) {
			db := openBench(b, &Options{ReadMode: mode, CompactionThreshold: -1})
			loadThin(b, db, n, 24)
			require.NoError(b, db.Sync())
			if mode == ReadAuto { // as if the DB outgrew memory: mincore per Get
				db.cold.limit = 0
				db.mu.Lock()
				db.noteSizeLocked()
				db.mu.Unlock()
			}
			before := db.cold.preads.Load()
			var seed atomic.Uint64
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(seed.Add(1), 3))
				k := make([]byte, 16)
				v := make([]byte, 0, 64)
				for pb.Next() {
					var err error
					v, err = db.AppendValue(v[:0], benchKey(k, rng.Uint64N(n)))
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(db.cold.preads.Load()-before)/float64(b.N), "preads/op")
		})
	}
}

// TestColdReadMeasure measures random Gets from 64 goroutines on a DB
// whose segments are not in the page cache: reads/s and bytes read from
// the disk per Get (/proc/self/io read_bytes). Manual, root only (it
// drops the page cache of the whole machine):
//
//	MARLIN_COLD_DIR=/tmp/cold MARLIN_COLD_KEYS=10000000 MARLIN_COLD_MODES=mmap,auto \
//	    go test -run TestColdReadMeasure -v -timeout 10m ./engine/
//
// The directory is loaded once (thin records, 16-byte keys, 24-byte
// values) and reused by later runs. "auto" is forced to treat the DB as
// larger than memory (mincore per read).
func TestColdReadMeasure(t *testing.T) {
	dir := os.Getenv("MARLIN_COLD_DIR")
	if dir == "" {
		t.Skip("MARLIN_COLD_DIR not set")
	}
	keys, _ := strconv.Atoi(os.Getenv("MARLIN_COLD_KEYS"))
	if keys <= 0 {
		keys = 1_000_000
	}
	dur := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("MARLIN_COLD_DURATION")); err == nil {
		dur = d
	}
	modes := strings.Split(os.Getenv("MARLIN_COLD_MODES"), ",")
	if _, err := os.Stat(dir); err != nil {
		start := time.Now()
		db, err := Open(dir, &Options{Sync: SyncNone, Logger: discardLogger, CompactionThreshold: -1})
		require.NoError(t, err)
		var batch Batch
		k := make([]byte, 16)
		v := make([]byte, 24)
		for i := range keys {
			batch.Put(benchKey(k, uint64(i)), v)
			if batch.Len() == 1000 || i == keys-1 {
				require.NoError(t, db.Write(&batch))
				batch.Reset()
			}
		}
		require.NoError(t, db.Close())
		t.Logf("loaded %d keys in %v", keys, time.Since(start))
	}
	for _, m := range modes {
		mode, err := ParseReadMode(m)
		require.NoError(t, err)
		db, err := Open(dir, &Options{Sync: SyncNone, Logger: discardLogger, CompactionThreshold: -1,
			ExpiryInterval: -1, ReadMode: mode})
		require.NoError(t, err)
		if mode == ReadAuto {
			db.cold.limit = 0
			db.mu.Lock()
			db.noteSizeLocked()
			db.mu.Unlock()
		}
		require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0))
		rb0 := readBytes(t)
		var gets atomic.Int64
		stop := time.Now().Add(dur)
		var wg sync.WaitGroup
		for g := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 9))
				k := make([]byte, 16)
				v := make([]byte, 0, 64)
				for i := 0; ; i++ {
					if i%64 == 0 && time.Now().After(stop) {
						return
					}
					var err error
					if v, err = db.AppendValue(v[:0], benchKey(k, rng.Uint64N(uint64(keys)))); err != nil {
						t.Error(err)
						return
					}
					gets.Add(1)
				}
			}()
		}
		wg.Wait()
		rb := readBytes(t) - rb0
		n := gets.Load()
		t.Logf("mode %s: %d keys, %d Gets in %v from 64 goroutines: %.0f Gets/s, %.0f bytes read per Get, %d preads",
			mode, keys, n, dur, float64(n)/dur.Seconds(), float64(rb)/float64(n), db.cold.preads.Load())
		require.NoError(t, db.Close())
	}
}

func readBytes(t *testing.T) int64 {
	f, err := os.Open("/proc/self/io")
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "read_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no read_bytes in /proc/self/io")
	return 0
}
