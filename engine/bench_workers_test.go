package engine

import (
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func benchKeysFromEnv(def int) int {
	if s := os.Getenv("MARLIN_BENCH_KEYS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// BenchmarkRestart loads thin records, closes (which writes an index
// snapshot) and times Open with the snapshot and with a full replay of the
// log. MARLIN_BENCH_KEYS sets the key count (default 10 million). Run with
// -benchtime 1x.
func BenchmarkRestart(b *testing.B) {
	n := benchKeysFromEnv(10_000_000)
	dir := b.TempDir()
	o := &Options{Sync: SyncNone, Logger: discardLogger, CompactionThreshold: -1}
	db, err := Open(dir, o)
	require.NoError(b, err)
	loadThin(b, db, n, 8)
	start := time.Now()
	require.NoError(b, db.Close())
	b.ReportMetric(time.Since(start).Seconds(), "close-with-snapshot-s")
	for i := 0; i < b.N; i++ {
		for _, full := range []bool{false, true} {
			oo := *o
			oo.DisableSnapshots = full
			start := time.Now()
			db, err := Open(dir, &oo)
			require.NoError(b, err)
			el := time.Since(start)
			st, err := db.Stats()
			require.NoError(b, err)
			require.EqualValues(b, n, st.Keys)
			require.Equal(b, !full, st.OpenedFromSnapshot)
			name := "open-snapshot-s"
			if full {
				name = "open-replay-s"
			}
			b.ReportMetric(el.Seconds(), name)
			require.NoError(b, db.Close())
		}
	}
}

// BenchmarkCompaction loads thin records, overwrites every one (half the
// log is then dead) and measures: the p99 of random gets from 2 goroutines
// without and with a rate-limited compaction running, and the throughput of
// a full unthrottled compaction. MARLIN_BENCH_KEYS sets the key count
// (default 2 million).
func BenchmarkCompaction(b *testing.B) {
	n := benchKeysFromEnv(2_000_000)
	for i := 0; i < b.N; i++ {
		o := &Options{Sync: SyncNone, Logger: discardLogger, CompactionThreshold: -1, SegmentSize: 32 << 20}
		db, err := Open(b.TempDir(), o)
		require.NoError(b, err)
		loadThin(b, db, n, 8)
		loadThin(b, db, n, 8) // every record superseded once
		require.NoError(b, db.Sync())

		p99 := func(compact bool) time.Duration {
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if compact {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = db.compactPass(0.3, 64<<20, false)
				}()
			}
			lat := make([][]time.Duration, 2)
			var rw sync.WaitGroup
			for g := range 2 {
				rw.Add(1)
				go func() {
					defer rw.Done()
					rnd := rand.New(rand.NewPCG(uint64(g), 3))
					k := make([]byte, 16)
					v := make([]byte, 0, 64)
					deadline := time.Now().Add(2 * time.Second)
					for time.Now().Before(deadline) {
						t0 := time.Now()
						var err error
						v, err = db.AppendValue(v[:0], benchKey(k, rnd.Uint64N(uint64(n))))
						lat[g] = append(lat[g], time.Since(t0))
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			rw.Wait()
			close(stop)
			wg.Wait()
			all := append(lat[0], lat[1]...)
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			return all[len(all)*99/100]
		}
		base := p99(false)
		st0, err := db.Stats()
		require.NoError(b, err)
		during := p99(true)
		st1, err := db.Stats()
		require.NoError(b, err)
		b.ReportMetric(float64(base.Nanoseconds()), "get-p99-ns")
		b.ReportMetric(float64(during.Nanoseconds()), "get-p99-compacting-ns")
		// Proof that compaction ran during the second measurement.
		b.ReportMetric(float64(st1.BytesRewritten-st0.BytesRewritten)/1e6, "rewritten-during-MB")

		before, err := db.Stats()
		require.NoError(b, err)
		start := time.Now()
		require.NoError(b, db.Compact())
		el := time.Since(start)
		after, err := db.Stats()
		require.NoError(b, err)
		read := after.BytesReclaimed - before.BytesReclaimed
		b.ReportMetric(float64(read)/el.Seconds()/1e6, "compact-read-MB/s")
		b.ReportMetric(float64(after.DiskBytes)/float64(after.LiveBytes), "disk/live")
		require.NoError(b, db.Close())
	}
}
