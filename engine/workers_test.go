package engine

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestCheckpointDuringWrites: a checkpoint taken while two writers run
// opens to a state that is a prefix of each writer's history, contains
// everything acknowledged before it started, and reads the same across
// reopen.
func TestCheckpointDuringWrites(t *testing.T) {
	for _, name := range []string{"mem", "os"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir, dest := "/db", "/ckpt"
			if name == "os" {
				fs, dir, dest = vfs.Default, t.TempDir(), t.TempDir()+"/ckpt"
			}
			o := testOpts(fs)
			db, err := Open(dir, o)
			require.NoError(t, err)
			var acked [2]atomic.Int64 // ops acknowledged per writer
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int64(0); ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						// Op 2i puts k<w>-<i>; op 2i+1 sets the counter c<w> = i.
						require.NoError(t, db.Put(fmt.Appendf(nil, "k%d-%d", w, i), []byte("x")))
						acked[w].Store(2*i + 1)
						require.NoError(t, db.Put(fmt.Appendf(nil, "c%d", w), []byte(strconv.FormatInt(i, 10))))
						acked[w].Store(2*i + 2)
					}
				}()
			}
			time.Sleep(20 * time.Millisecond)
			before := [2]int64{acked[0].Load(), acked[1].Load()}
			require.NoError(t, db.Checkpoint(dest))
			after := [2]int64{acked[0].Load(), acked[1].Load()}
			time.Sleep(10 * time.Millisecond)
			close(stop)
			wg.Wait()
			require.NoError(t, db.Close())

			ro := *o
			ro.ReadOnly = true
			for round := range 2 {
				cp, err := Open(dest, &ro)
				require.NoError(t, err)
				st, err := cp.Stats()
				require.NoError(t, err)
				require.True(t, st.OpenedFromSnapshot, "a checkpoint carries its index snapshot")
				for w := range 2 {
					// Count the prefix of k<w>-i present; nothing after a gap.
					var m int64
					for {
						ok, err := cp.Has(fmt.Appendf(nil, "k%d-%d", w, m))
						require.NoError(t, err)
						if !ok {
							break
						}
						m++
					}
					for j := m + 1; j < m+50; j++ {
						ok, err := cp.Has(fmt.Appendf(nil, "k%d-%d", w, j))
						require.NoError(t, err)
						require.False(t, ok, "writer %d: k%d present after the gap at %d", w, j, m)
					}
					ops := 2 * m // ops of writer w in the checkpoint: 2m or 2m-1
					v, err := cp.Get(fmt.Appendf(nil, "c%d", w))
					switch {
					case m == 1 && errors.Is(err, ErrNotFound):
						// The checkpoint caught the writer between its
						// first two writes (on a busy machine it may not
						// have run before the checkpoint).
						ops = 1
					case m > 0:
						require.NoError(t, err, "writer %d: %d keys", w, m)
						c, _ := strconv.ParseInt(string(v), 10, 64)
						require.Contains(t, []int64{m - 2, m - 1}, c, "writer %d: counter %d with %d keys", w, c, m)
						if c == m-2 {
							ops = 2*m - 1
						}
					}
					require.GreaterOrEqual(t, ops, before[w], "writer %d: acknowledged before the checkpoint", w)
					require.LessOrEqual(t, ops, after[w]+1, "writer %d: from after the checkpoint", w)
				}
				require.NoError(t, cp.Close())
				if round == 0 {
					// Writable open of the checkpoint works too.
					cw, err := Open(dest, o)
					require.NoError(t, err)
					require.NoError(t, cw.Close())
				}
			}
		})
	}
}

func TestCheckpointRefusesNonEmptyDir(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", testOpts(fs))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("a"), []byte("1")))
	require.NoError(t, db.Checkpoint("/c"))
	require.Error(t, db.Checkpoint("/c"))
}

// TestExpirerReclaims: expired keys leave the index in bounded passes,
// their bytes become dead, and compaction then drops them without letting
// an older version come back.
func TestExpirerReclaims(t *testing.T) {
	fs := vfs.NewMem()
	o := testOpts(fs)
	o.ExpiryInterval = -1 // passes driven by the test
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	const n = 3000
	for i := range n {
		k := fmt.Appendf(nil, "k%d", i)
		require.NoError(t, db.Put(k, []byte("old"))) // an older version without TTL
		if i%3 == 0 {
			require.NoError(t, db.PutTTL(k, []byte("new"), 20*time.Millisecond))
		} else {
			require.NoError(t, db.PutTTL(k, []byte("new"), time.Hour))
		}
	}
	time.Sleep(40 * time.Millisecond)
	require.NoError(t, db.Sync()) // the expirer reads only what reached the file
	st0, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, n, st0.Keys)

	cursors := map[*segFile]*expiryCursor{}
	total, passes := 0, 0
	for {
		r, read := db.expirePass(cursors, 500)
		require.LessOrEqual(t, read, 500)
		total += r
		passes++
		if read == 0 {
			break
		}
		require.Less(t, passes, 1000)
	}
	require.Equal(t, n/3, total)
	require.Greater(t, passes, 2, "a pass reads at most its budget")
	st1, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, n-n/3, st1.Keys)
	require.Greater(t, st1.DeadBytes, st0.DeadBytes)
	// Another pass finds and reads nothing: ttlMin moved on.
	r, read := db.expirePass(cursors, 500)
	require.Zero(t, r)
	require.Zero(t, read)
	check := func(db *DB) {
		for i := range n {
			v, err := db.Get(fmt.Appendf(nil, "k%d", i))
			if i%3 == 0 {
				require.ErrorIs(t, err, ErrNotFound, "k%d", i)
				continue
			}
			require.NoError(t, err)
			require.Equal(t, "new", string(v))
		}
	}
	check(db)
	require.NoError(t, db.Compact())
	check(db)
	require.NoError(t, db.Close())
	for _, disable := range []bool{false, true} {
		o2 := *o
		o2.DisableSnapshots = disable
		db, err = Open("/db", &o2)
		require.NoError(t, err)
		check(db) // the expired keys' "old" versions must not come back
		require.NoError(t, db.Close())
	}
}

// TestCheckpointNeverSharesItsNewestSegment: the segment active at the cut
// is copied even when a roll seals it before the copy is made, so appends
// to an opened checkpoint never reach the source database (a regression:
// it used to be hard-linked when sealed by then).
func TestCheckpointNeverSharesItsNewestSegment(t *testing.T) {
	for _, name := range []string{"mem", "os"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir, dest := "/db", "/ckpt"
			if name == "os" {
				fs, dir, dest = vfs.Default, t.TempDir(), t.TempDir()+"/ckpt"
			}
			o := testOpts(fs)
			o.CompactionThreshold = -1
			db, err := Open(dir, o)
			require.NoError(t, err)
			require.NoError(t, db.Put([]byte("a"), []byte("1")))
			// Seal the active segment between the cut and the copies, the
			// way a roll racing with the checkpoint would.
			var meta *snapMeta
			db.compactMu.Lock()
			_, err = db.writeSnapshot(db.dir, snapName(99), nil, func(m *snapMeta) error {
				meta = m
				db.mu.Lock()
				err := db.rollLocked()
				db.mu.Unlock()
				if err != nil {
					return err
				}
				require.NoError(t, fs.MkdirAll(dest, 0o755))
				for _, s := range m.segs {
					if err := db.copySegment(s, s.gen == m.acct.gen, dest, &CheckpointResult{}); err != nil {
						return err
					}
				}
				return nil
			})
			db.compactMu.Unlock()
			require.NoError(t, err)
			require.NoError(t, db.Close())

			active := fmt.Sprintf("%s/%016d.seg", dest, meta.acct.gen)
			src := fmt.Sprintf("%s/%016d.seg", dir, meta.acct.gen)
			before := readFile(t, fs, src)
			f, err := fs.OpenReadWrite(active)
			require.NoError(t, err)
			_, err = f.Write([]byte("appended to the checkpoint"))
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.Equal(t, before, readFile(t, fs, src), "an append to the checkpoint reached the source")
		})
	}
}
