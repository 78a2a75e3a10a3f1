package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestCompactionRacesReadersAndWriters runs writers (puts, overwrites,
// deletes, batches), readers, an iterator, explicit compactions and
// snapshots, and the background compactor all at once on small segments.
// Readers must never see a wrong value, stable keys must never go missing,
// and after a reopen the state must equal the writers' model.
func TestCompactionRacesReadersAndWriters(t *testing.T) {
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir := "/db"
			if fsName == "os" {
				fs, dir = vfs.Default, t.TempDir()
			}
			o := &Options{FS: fs, SegmentSize: 16 << 10, WriteBufferSize: 4096, Sync: SyncNone,
				Logger: discardLogger, CompactionThreshold: 0.2, CompactionRate: 1 << 30,
				SnapshotRecords: 2000, SnapshotInterval: time.Hour, SnapshotLogRatio: -1}
			db, err := Open(dir, o)
			require.NoError(t, err)

			stableVal := func(i int) []byte { return fmt.Appendf(nil, "stable-%d-%s", i, bytes.Repeat([]byte{'s'}, i%40)) }
			const stable = 300
			for i := range stable {
				require.NoError(t, db.Put(fmt.Appendf(nil, "s%d", i), stableVal(i)))
			}

			const writers, keysPer = 2, 200
			var mu sync.Mutex
			model := map[string]string{}
			for i := range stable {
				model[fmt.Sprintf("s%d", i)] = string(stableVal(i))
			}
			stop := make(chan struct{})
			var failed atomic.Bool
			fail := func(format string, args ...any) {
				if failed.CompareAndSwap(false, true) {
					t.Errorf(format, args...)
				}
			}
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(uint64(w), 1))
					for v := 0; ; v++ {
						select {
						case <-stop:
							return
						default:
						}
						key := fmt.Sprintf("w%d-%d", w, rnd.IntN(keysPer))
						val := fmt.Sprintf("%s=%d%s", key, v, bytes.Repeat([]byte{'v'}, rnd.IntN(60)))
						var err error
						mu.Lock() // the model and the engine change together
						switch p := rnd.IntN(10); {
						case p < 6:
							err = db.Put([]byte(key), []byte(val))
							model[key] = val
						case p < 8:
							err = db.Delete([]byte(key))
							delete(model, key)
						default:
							var b Batch
							b.Put([]byte(key), []byte(val))
							k2 := fmt.Sprintf("w%d-%d", w, rnd.IntN(keysPer))
							b.Delete([]byte(k2))
							err = db.Write(&b)
							model[key] = val
							delete(model, k2)
						}
						mu.Unlock()
						if err != nil {
							fail("writer %d: %v", w, err)
							return
						}
					}
				}()
			}
			for r := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(uint64(r), 2))
					for {
						select {
						case <-stop:
							return
						default:
						}
						if rnd.IntN(2) == 0 {
							i := rnd.IntN(stable)
							v, err := db.Get(fmt.Appendf(nil, "s%d", i))
							if err != nil || !bytes.Equal(v, stableVal(i)) {
								fail("stable key s%d: %q, %v", i, v, err)
								return
							}
							continue
						}
						key := fmt.Sprintf("w%d-%d", rnd.IntN(writers), rnd.IntN(keysPer))
						v, err := db.Get([]byte(key))
						if errors.Is(err, ErrNotFound) {
							continue
						}
						if err != nil || !bytes.HasPrefix(v, []byte(key+"=")) {
							fail("key %s: value %q of another key, %v", key, v, err)
							return
						}
					}
				}()
			}
			wg.Add(1)
			go func() { // iterator
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					seen := map[string]bool{}
					err := db.ForEach(func(k, v []byte) error {
						if seen[string(k)] {
							return fmt.Errorf("key %q twice in one pass", k)
						}
						seen[string(k)] = true
						if k[0] == 's' {
							var i int
							fmt.Sscanf(string(k), "s%d", &i)
							if !bytes.Equal(v, stableVal(i)) {
								return fmt.Errorf("stable %q: wrong value %q", k, v)
							}
						} else if !bytes.HasPrefix(v, append(bytes.Clone(k), '=')) {
							return fmt.Errorf("key %q: value %q of another key", k, v)
						}
						return nil
					})
					if err != nil {
						fail("iterator: %v", err)
						return
					}
					for i := range stable {
						if !seen[fmt.Sprintf("s%d", i)] {
							fail("iterator pass missed stable key s%d", i)
							return
						}
					}
				}
			}()
			wg.Add(1)
			go func() { // explicit compactions and snapshots
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if i%3 == 2 {
						err = db.Snapshot()
					} else {
						err = db.Compact()
					}
					if err != nil {
						fail("compact/snapshot: %v", err)
						return
					}
				}
			}()
			time.Sleep(1500 * time.Millisecond)
			close(stop)
			wg.Wait()
			st, err := db.Stats()
			require.NoError(t, err)
			require.Greater(t, st.SegmentsRemoved, int64(0), "compaction must have removed segments during the run")
			require.NoError(t, db.ix.Check())
			require.Equal(t, model, dumpDB(t, db))
			require.NoError(t, db.Close())
			for _, disable := range []bool{false, true} {
				oo := *o
				oo.DisableSnapshots = disable
				db, err := Open(dir, &oo)
				require.NoError(t, err)
				require.Equal(t, model, dumpDB(t, db), "after reopen (snapshots disabled: %v)", disable)
				require.NoError(t, db.Close())
			}
		})
	}
}
