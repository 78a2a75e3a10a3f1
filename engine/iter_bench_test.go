package engine

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkForEach walks a database of MARLIN_SCAN_KEYS pairs (default
// 10^6; 16-byte keys, 100-byte values) and reports pairs/s. With
// MARLIN_SCAN_DIR the database is built there once and reused (reopened
// each run), so that a run can follow a drop of the page cache:
//
//	MARLIN_SCAN_KEYS=10000000 MARLIN_SCAN_DIR=/tmp/scan go test -run XXX -bench ForEach -benchtime 1x ./engine/
//	sync; echo 3 > /proc/sys/vm/drop_caches
//	(run again: the walk starts with a cold cache)
func BenchmarkForEach(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("MARLIN_SCAN_KEYS"); s != "" {
		v, err := strconv.Atoi(s)
		require.NoError(b, err)
		n = v
	}
	dir := os.Getenv("MARLIN_SCAN_DIR")
	o := &Options{Logger: discardLogger, Sync: SyncNone}
	var db *DB
	if dir == "" {
		db = openBench(b, o)
		loadThin(b, db, n, 100)
	} else {
		_, statErr := os.Stat(dir + "/MARLIN")
		var err error
		db, err = Open(dir, o)
		require.NoError(b, err)
		b.Cleanup(func() { db.Close() })
		if statErr != nil {
			loadThin(b, db, n, 100)
			require.NoError(b, db.Sync())
		}
	}
	var total int
	start := time.Now()
	for b.Loop() {
		count := 0
		require.NoError(b, db.ForEach(func(k, v []byte) error { count++; return nil }))
		require.Equal(b, n, count)
		total += count
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "pairs/s")
}
