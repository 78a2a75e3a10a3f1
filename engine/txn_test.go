package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestTxnSemantics: what Tx.Get sees (stored versions, the transaction's
// own writes), the sequence numbers writes get, expiries, cancelling, and
// misuse.
func TestTxnSemantics(t *testing.T) {
	clock := newFakeClock()
	clock.Set(time.UnixMilli(1_700_000_000_000))
	o := clock.opts(testOpts(vfs.NewMem()))
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("a"), []byte("A0")))
	_, itA, err := db.AppendItem(nil, []byte("a"))
	require.NoError(t, err)

	// Reads see stored versions; writes are read back inside the
	// transaction with the seq and expiry they will commit with; the
	// writes get Next, Next+1, ... in order.
	exp := clock.Now().Add(time.Hour)
	var next uint64
	seq, err := db.Txn(func(tx *Tx) error {
		next = tx.Next()
		require.True(t, clock.Now().Equal(tx.Now()))
		v, it, found, err := tx.Get([]byte("a"))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, "A0", string(v))
		require.Equal(t, itA, it)
		_, _, found, err = tx.Get([]byte("b"))
		require.NoError(t, err)
		require.False(t, found)

		require.NoError(t, tx.Put([]byte("b"), []byte("B1"), exp))
		require.NoError(t, tx.Put([]byte("a"), append(v, '+'), time.Time{}))
		require.NoError(t, tx.Delete([]byte("c")))
		require.Equal(t, 3, tx.Len())
		v, it, found, err = tx.Get([]byte("b"))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, "B1", string(v))
		require.Equal(t, Item{Seq: next, Expiry: exp}, it)
		v, it, found, err = tx.Get([]byte("a"))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, "A0+", string(v))
		require.Equal(t, Item{Seq: next + 1}, it)
		v[0] = 'X' // the caller owns the copy
		_, _, found, err = tx.Get([]byte("c"))
		require.NoError(t, err)
		require.False(t, found)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, next, seq)
	v, it, err := db.AppendItem(nil, []byte("b"))
	require.NoError(t, err)
	require.Equal(t, "B1", string(v))
	require.Equal(t, Item{Seq: seq, Expiry: exp}, it)
	v, it, err = db.AppendItem(nil, []byte("a"))
	require.NoError(t, err)
	require.Equal(t, "A0+", string(v))
	require.Equal(t, seq+1, it.Seq)

	// An expired key reads as absent; a put whose expiry is not after
	// Now deletes the key.
	clock.Advance(2 * time.Hour)
	_, err = db.Txn(func(tx *Tx) error {
		_, _, found, err := tx.Get([]byte("b"))
		require.NoError(t, err)
		require.False(t, found)
		require.NoError(t, tx.Put([]byte("a"), []byte("gone"), tx.Now()))
		_, _, found, err = tx.Get([]byte("a"))
		require.NoError(t, err)
		require.False(t, found)
		return nil
	})
	require.NoError(t, err)
	_, err = db.Get([]byte("a"))
	require.ErrorIs(t, err, ErrNotFound)

	// Nothing buffered: nothing written, seq 0.
	st0, err := db.Stats()
	require.NoError(t, err)
	seq, err = db.Txn(func(tx *Tx) error {
		_, _, _, err := tx.Get([]byte("a"))
		return err
	})
	require.NoError(t, err)
	require.Zero(t, seq)

	// fn's error cancels every write.
	boom := errors.New("boom")
	seq, err = db.Txn(func(tx *Tx) error {
		require.NoError(t, tx.Put([]byte("x"), []byte("1"), time.Time{}))
		require.NoError(t, tx.Put([]byte("y"), []byte("2"), time.Time{}))
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Zero(t, seq)
	for _, k := range []string{"x", "y"} {
		_, err = db.Get([]byte(k))
		require.ErrorIs(t, err, ErrNotFound, k)
	}
	st1, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, st0.Batches, st1.Batches, "neither the empty nor the cancelled transaction wrote")

	// A bad write fails the transaction even if fn ignores its error.
	_, err = db.Txn(func(tx *Tx) error {
		require.NoError(t, tx.Put([]byte("x"), []byte("1"), time.Time{}))
		err := tx.Put([]byte("y"), make([]byte, db.opts.MaxValueSize+1), time.Time{})
		require.ErrorIs(t, err, ErrValueTooLarge)
		require.ErrorIs(t, tx.Delete(nil), ErrEmptyKey)
		return nil
	})
	require.ErrorIs(t, err, ErrValueTooLarge)
	_, err = db.Get([]byte("x"))
	require.ErrorIs(t, err, ErrNotFound)

	// More than a segment holds: refused, nothing written.
	_, err = db.Txn(func(tx *Tx) error {
		for i := range 8 {
			if err := tx.Put([]byte("big"+strconv.Itoa(i)), make([]byte, 10<<10), time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	require.ErrorIs(t, err, ErrBatchTooLarge)
	_, err = db.Get([]byte("big0"))
	require.ErrorIs(t, err, ErrNotFound)

	// A Tx used after its function returned.
	var kept *Tx
	_, err = db.Txn(func(tx *Tx) error { kept = tx; return nil })
	require.NoError(t, err)
	_, _, _, err = kept.Get([]byte("a"))
	require.ErrorIs(t, err, ErrTxnDone)
	require.ErrorIs(t, kept.Put([]byte("a"), nil, time.Time{}), ErrTxnDone)

	// A panic in fn releases the write lock.
	require.Panics(t, func() {
		_, _ = db.Txn(func(tx *Tx) error { panic("fn panics") })
	})
	require.NoError(t, db.Put([]byte("after-panic"), []byte("ok")))

	require.NoError(t, db.Close())
	_, err = db.Txn(func(*Tx) error { return nil })
	require.ErrorIs(t, err, ErrClosed)

	ro := *o
	ro.ReadOnly = true
	rdb, err := Open("/db", &ro)
	require.NoError(t, err)
	defer rdb.Close()
	_, err = rdb.Txn(func(*Tx) error { return nil })
	require.ErrorIs(t, err, ErrReadOnly)
}

// TestTxnNormalizesKeys: a transaction's reads and writes name canonical
// keys, like every other method.
func TestTxnNormalizesKeys(t *testing.T) {
	db, err := Open("/db", normOpts(t, vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("os=android|country=in"), []byte("v1")))
	_, err = db.Txn(func(tx *Tx) error {
		v, _, found, err := tx.Get([]byte("country=in|os=android"))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, "v1", string(v))
		require.NoError(t, tx.Put([]byte("b|a"), []byte("v2"), time.Time{}))
		v, _, found, err = tx.Get([]byte("a|b"))
		require.NoError(t, err)
		require.True(t, found, "the transaction's own write, by another spelling")
		require.Equal(t, "v2", string(v))
		return tx.Delete([]byte("country=in|os=android"))
	})
	require.NoError(t, err)
	v, err := db.Get([]byte("a|b"))
	require.NoError(t, err)
	require.Equal(t, "v2", string(v))
	_, err = db.Get([]byte("os=android|country=in"))
	require.ErrorIs(t, err, ErrNotFound)
}

// TestTxnInvalidatesFill: a load in flight when a transaction writes its
// key is not stored over the write.
func TestTxnInvalidatesFill(t *testing.T) {
	l := newBlockingLoader(0)
	db, err := Open("/db", fillOpts(vfs.NewMem(), l.load))
	require.NoError(t, err)
	defer db.Close()
	k := []byte("key")
	_, err = db.Get(k)
	require.ErrorIs(t, err, ErrNotFound)
	<-l.started
	_, err = db.Txn(func(tx *Tx) error { return tx.Put(k, []byte("txn"), time.Time{}) })
	require.NoError(t, err)
	close(l.release)
	waitUntil(t, "the load", func() bool { return fillStats(t, db).Superseded == 1 })
	v, err := db.Get(k)
	require.NoError(t, err)
	require.Equal(t, "txn", string(v))
}

// TestTxnIsolation: transfers between accounts from many goroutines keep
// the total, which audits (transactions that only read) always see
// whole; increments made by transactions and by Update on one counter
// are never lost. Cached and cold (pread) reads; run with -race.
func TestTxnIsolation(t *testing.T) {
	for _, mode := range []ReadMode{ReadAuto, ReadPread} {
		t.Run(mode.String(), func(t *testing.T) {
			o := testOpts(vfs.Default)
			o.ReadMode = mode
			db, err := Open(t.TempDir(), o)
			require.NoError(t, err)
			defer db.Close()
			const accounts, start = 6, 1000
			acct := func(i int) []byte { return []byte("acct-" + strconv.Itoa(i)) }
			for i := range accounts {
				require.NoError(t, db.Put(acct(i), []byte(strconv.Itoa(start))))
			}
			readInt := func(tx *Tx, k []byte) int {
				v, _, found, err := tx.Get(k)
				if err != nil || !found {
					return 0
				}
				n, _ := strconv.Atoi(string(v))
				return n
			}
			const workers, each = 4, 150
			var wg sync.WaitGroup
			errs := make(chan error, 3*workers)
			for w := range workers {
				wg.Go(func() { // transfers
					rnd := rand.New(rand.NewPCG(uint64(w), 1))
					for range each {
						from, to := rnd.IntN(accounts), rnd.IntN(accounts)
						_, err := db.Txn(func(tx *Tx) error {
							a, b := readInt(tx, acct(from)), readInt(tx, acct(to))
							amt := rnd.IntN(10)
							if from == to {
								return nil
							}
							if err := tx.Put(acct(from), []byte(strconv.Itoa(a-amt)), time.Time{}); err != nil {
								return err
							}
							return tx.Put(acct(to), []byte(strconv.Itoa(b+amt)), time.Time{})
						})
						if err != nil {
							errs <- err
							return
						}
					}
				})
				wg.Go(func() { // audits
					for range each {
						_, err := db.Txn(func(tx *Tx) error {
							sum := 0
							for i := range accounts {
								sum += readInt(tx, acct(i))
							}
							if sum != accounts*start {
								return fmt.Errorf("audit saw a total of %d", sum)
							}
							return nil
						})
						if err != nil {
							errs <- err
							return
						}
					}
				})
				wg.Go(func() { // one counter, two write paths
					for i := range each {
						var err error
						if (w+i)%2 == 0 {
							_, err = db.Update([]byte("counter"), incr)
						} else {
							_, err = db.Txn(func(tx *Tx) error {
								n := readInt(tx, []byte("counter"))
								return tx.Put([]byte("counter"), []byte(strconv.Itoa(n+1)), time.Time{})
							})
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			v, err := db.Get([]byte("counter"))
			require.NoError(t, err)
			require.Equal(t, strconv.Itoa(workers*each), string(v))
		})
	}
}

// TestTxnCrashAtomic crashes a workload of transactions at every file
// operation (CrashClone: synced data kept, unsynced pages kept, zeroed or
// lost at random). Transaction n writes a=b=c=n and either puts d=n (n
// even) or deletes d (n odd), with single puts between. Every image must
// open with the three keys equal (or all absent: no transaction), d
// agreeing with them, and, under SyncAlways, no acknowledged transaction
// lost. Small transactions in 4 KiB segments roll between and around
// them; large ones (over the 4 KiB write buffer) are written to the file
// in two writes, so some crashes fall between the two.
func TestTxnCrashAtomic(t *testing.T) {
	for _, c := range []struct {
		name    string
		segment int64
		pad     int
	}{{"small", 4 << 10, 300}, {"large", 64 << 10, 1500}} {
		t.Run(c.name, func(t *testing.T) {
			n := txnCrashRun(t, c.segment, make([]byte, c.pad))
			t.Logf("%d crash images checked", n)
		})
	}
}

func txnCrashRun(t *testing.T, segSize int64, pad []byte) int {
	type image struct {
		fs    *vfs.MemFS
		acked int // transactions acknowledged before the crash
		what  string
	}
	mem := vfs.NewMem()
	var images []image
	acked := 0
	inj := &crashInjector{at: func(k int64, op vfs.Op, name string) {
		var rnd *rand.Rand
		if k%2 == 1 {
			rnd = rand.New(rand.NewPCG(7, uint64(k)))
		}
		images = append(images, image{mem.CrashClone(rnd), acked, fmt.Sprintf("crash before op %d (%v %s)", k, op, name)})
	}}
	o := lcOpts(vfs.NewErrorFS(mem, inj))
	o.Sync = SyncAlways
	o.SegmentSize = segSize
	db, err := Open("/db", o)
	require.NoError(t, err)
	const txns = 60
	for n := 1; n <= txns; n++ {
		_, err := db.Txn(func(tx *Tx) error {
			val := append([]byte(strconv.Itoa(n)+":"), pad...)
			for _, k := range []string{"a", "b", "c"} {
				if err := tx.Put([]byte(k), val, time.Time{}); err != nil {
					return err
				}
			}
			if n%2 == 0 {
				return tx.Put([]byte("d"), val, time.Time{})
			}
			return tx.Delete([]byte("d"))
		})
		require.NoError(t, err)
		acked = n
		require.NoError(t, db.Put([]byte("other-"+strconv.Itoa(n%5)), pad))
	}
	require.NoError(t, db.Close())
	require.NotEmpty(t, images)
	for _, im := range images {
		o.FS = im.fs
		db, err := Open("/db", o)
		require.NoError(t, err, im.what)
		n := -1
		for _, k := range []string{"a", "b", "c"} {
			v, err := db.Get([]byte(k))
			got := 0
			if !errors.Is(err, ErrNotFound) {
				require.NoError(t, err, "%s: %s", im.what, k)
				got, err = strconv.Atoi(string(v[:len(v)-len(pad)-1]))
				require.NoError(t, err, im.what)
			}
			if n >= 0 {
				require.Equal(t, n, got, "%s: key %s from another transaction", im.what, k)
			}
			n = got
		}
		require.GreaterOrEqual(t, n, im.acked, "%s: an acknowledged transaction was lost", im.what)
		v, err := db.Get([]byte("d"))
		if n%2 == 0 && n > 0 {
			require.NoError(t, err, im.what)
			require.Equal(t, strconv.Itoa(n)+":", string(v[:len(v)-len(pad)]), im.what)
		} else {
			require.ErrorIs(t, err, ErrNotFound, "%s: d after transaction %d", im.what, n)
		}
		require.NoError(t, db.Close(), im.what)
	}
	return len(images)
}
