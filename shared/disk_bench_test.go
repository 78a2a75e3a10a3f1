package shared

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

// BenchmarkSharedDisk: bytes on disk for diskKeys keys over diskValues
// distinct values of diskValueSize bytes (key i holds value i mod
// diskValues), stored plainly (engine batches of 1000) and with shared
// values (one Store.Put per key), after a compaction and Close (which
// writes the index snapshot). Reported: the directory's bytes, per key,
// and the segments' bytes. One load per run (run with -benchtime=1x):
//
//	go test -run '^$' -bench BenchmarkSharedDisk -benchtime=1x ./shared/
//
// MARLIN_SHARED_DISK_KEYS overrides the key count (e.g. 100000 for a
// quick look).
func BenchmarkSharedDisk(b *testing.B) {
	keys := 1_000_000
	if s := os.Getenv("MARLIN_SHARED_DISK_KEYS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(b, err)
		keys = n
	}
	const diskValues, diskValueSize = 10_000, 1024
	rnd := rand.New(rand.NewPCG(1, 1))
	values := make([][]byte, diskValues)
	for i := range values {
		values[i] = make([]byte, diskValueSize)
		for j := range values[i] {
			values[i][j] = byte(rnd.Uint32())
		}
	}
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }
	for _, mode := range []string{"plain", "shared"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				dir := b.TempDir()
				o := &engine.Options{Sync: engine.SyncNone, CompactionThreshold: -1}
				db, err := engine.Open(dir, o)
				require.NoError(b, err)
				start := time.Now()
				if mode == "plain" {
					var batch engine.Batch
					for i := range keys {
						batch.Put(key(i), values[i%diskValues])
						if batch.Len() == 1000 || i == keys-1 {
							require.NoError(b, db.Write(&batch))
							batch.Reset()
						}
					}
				} else {
					s, err := Open(db, Options{})
					require.NoError(b, err)
					for i := range keys {
						require.NoError(b, s.Put(key(i), values[i%diskValues]))
					}
					st, err := s.Stats()
					require.NoError(b, err)
					require.Equal(b, int64(min(keys, diskValues)), st.Values)
					b.ReportMetric(float64(st.BytesSaved), "saved-bytes")
				}
				load := time.Since(start)
				require.NoError(b, db.Compact())
				est, err := db.Stats()
				require.NoError(b, err)
				require.NoError(b, db.Close())
				size := dirSize(b, dir)
				b.ReportMetric(float64(size), "disk-bytes")
				b.ReportMetric(float64(size)/float64(keys), "disk-bytes/key")
				b.ReportMetric(float64(est.DiskBytes), "segment-bytes")
				b.ReportMetric(float64(keys)/load.Seconds(), "puts/s")
			}
		})
	}
}

func dirSize(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	require.NoError(tb, err)
	return n
}

// BenchmarkSharedOps: a Get and a Put (an overwrite with another value
// of the set) of 1 KiB values, on 100,000 keys over 1,000 values held in
// the page cache, plainly and with shared values: what the extra reads
// and records cost in time.
func BenchmarkSharedOps(b *testing.B) {
	const keys, vals = 100_000, 1_000
	rnd := rand.New(rand.NewPCG(2, 2))
	values := make([][]byte, vals)
	for i := range values {
		values[i] = make([]byte, 1024)
		for j := range values[i] {
			values[i][j] = byte(rnd.Uint32())
		}
	}
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }
	type kv interface {
		Put(k, v []byte) error
		AppendValue(dst, k []byte) ([]byte, error)
	}
	for _, mode := range []string{"plain", "shared"} {
		db, err := engine.Open(b.TempDir(), &engine.Options{Sync: engine.SyncNone})
		require.NoError(b, err)
		var store kv = db
		if mode == "shared" {
			s, err := Open(db, Options{})
			require.NoError(b, err)
			store = s
		}
		for i := range keys {
			require.NoError(b, store.Put(key(i), values[i%vals]))
		}
		b.Run("get/"+mode, func(b *testing.B) {
			var buf []byte
			i := 0
			for b.Loop() {
				i = (i + 7919) % keys
				buf, err = store.AppendValue(buf[:0], key(i))
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("put/"+mode, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i = (i + 7919) % keys
				if err := store.Put(key(i), values[(i+1)%vals]); err != nil {
					b.Fatal(err)
				}
			}
		})
		require.NoError(b, db.Close())
	}
}
