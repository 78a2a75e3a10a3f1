package engine

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// incr is an UpdateFunc that adds 1 to a decimal counter (absent: 0).
func incr(value []byte, _ Item, found bool, _ uint64) (Change, error) {
	n := 0
	if found {
		var err error
		if n, err = strconv.Atoi(string(value)); err != nil {
			return Change{}, err
		}
	}
	return Change{Op: Set, Value: []byte(strconv.Itoa(n + 1))}, nil
}

// TestUpdateSemantics: what fn sees and what each decision writes.
func TestUpdateSemantics(t *testing.T) {
	db, err := Open(t.TempDir(), testOpts(vfs.Default))
	require.NoError(t, err)
	defer db.Close()
	k := []byte("k")

	// Absent: found false; next is the seq the write gets.
	var next uint64
	seq, err := db.Update(k, func(v []byte, cur Item, found bool, n uint64) (Change, error) {
		require.False(t, found)
		require.Nil(t, v)
		next = n
		return Change{Op: Set, Value: []byte("one")}, nil
	})
	require.NoError(t, err)
	require.Equal(t, next, seq)
	v, it, err := db.AppendItem(nil, k)
	require.NoError(t, err)
	require.Equal(t, "one", string(v))
	require.Equal(t, seq, it.Seq)
	require.True(t, it.Expiry.IsZero())

	// Present: fn sees the value and the version; a compare on the
	// version (memcached's cas) succeeds once.
	cas := func(want uint64, nv string) (uint64, error) {
		return db.Update(k, func(v []byte, cur Item, found bool, _ uint64) (Change, error) {
			if !found || cur.Seq != want {
				return Change{Op: Keep}, nil
			}
			return Change{Op: Set, Value: []byte(nv)}, nil
		})
	}
	s2, err := cas(seq, "two")
	require.NoError(t, err)
	require.Greater(t, s2, seq)
	s3, err := cas(seq, "three") // stale version: nothing written
	require.NoError(t, err)
	require.Zero(t, s3)
	got, err := db.Get(k)
	require.NoError(t, err)
	require.Equal(t, "two", string(got))

	// fn's error cancels the write.
	boom := errors.New("boom")
	_, err = db.Update(k, func([]byte, Item, bool, uint64) (Change, error) { return Change{Op: Set, Value: []byte("x")}, boom })
	require.ErrorIs(t, err, boom)
	got, _ = db.Get(k)
	require.Equal(t, "two", string(got))

	// An expiry keeps the value readable until then; one in the past
	// removes the key.
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	_, err = db.Update(k, func(v []byte, _ Item, _ bool, _ uint64) (Change, error) {
		return Change{Op: Set, Value: v, Expiry: exp}, nil
	})
	require.NoError(t, err)
	_, it, err = db.AppendItem(nil, k)
	require.NoError(t, err)
	require.True(t, exp.Equal(it.Expiry), "%v vs %v", exp, it.Expiry)
	_, err = db.Update(k, func(v []byte, cur Item, found bool, _ uint64) (Change, error) {
		require.True(t, found)
		require.True(t, exp.Equal(cur.Expiry))
		return Change{Op: Set, Value: v, Expiry: time.Now().Add(-time.Second)}, nil
	})
	require.NoError(t, err)
	_, err = db.Get(k)
	require.ErrorIs(t, err, ErrNotFound)

	// Remove of an absent key writes nothing; of a present one, deletes.
	st0, _ := db.Stats()
	seq, err = db.Update([]byte("absent"), func([]byte, Item, bool, uint64) (Change, error) { return Change{Op: Remove}, nil })
	require.NoError(t, err)
	require.Zero(t, seq)
	require.NoError(t, db.Put([]byte("p"), []byte("v")))
	_, err = db.Update([]byte("p"), func([]byte, Item, bool, uint64) (Change, error) { return Change{Op: Remove}, nil })
	require.NoError(t, err)
	_, err = db.Get([]byte("p"))
	require.ErrorIs(t, err, ErrNotFound)
	st1, _ := db.Stats()
	require.Equal(t, st0.Deletes+1, st1.Deletes)

	// Limits and misuse.
	_, err = db.Update(k, func([]byte, Item, bool, uint64) (Change, error) {
		return Change{Op: Set, Value: make([]byte, db.opts.MaxValueSize+1)}, nil
	})
	require.ErrorIs(t, err, ErrValueTooLarge)
	_, err = db.Update(nil, incr)
	require.ErrorIs(t, err, ErrEmptyKey)
	_, err = db.Update(k, func([]byte, Item, bool, uint64) (Change, error) { return Change{Op: ChangeOp(9)}, nil })
	require.ErrorIs(t, err, ErrBadOptions)
	require.NoError(t, db.Close())
	_, err = db.Update(k, incr)
	require.ErrorIs(t, err, ErrClosed)
}

// TestUpdateConcurrentCounters: increments from many goroutines are never
// lost, on cached and on cold (pread) reads, and survive a reopen; each
// write's seq is larger than the one it read.
func TestUpdateConcurrentCounters(t *testing.T) {
	for _, mode := range []ReadMode{ReadAuto, ReadPread} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOpts(vfs.Default)
			o.ReadMode = mode
			o.SegmentSize = 64 << 10 // rolls while the counters climb
			db, err := Open(dir, o)
			require.NoError(t, err)
			const workers, each, keys = 8, 300, 3
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						k := []byte("counter-" + strconv.Itoa((w+i)%keys))
						var read uint64
						seq, err := db.Update(k, func(v []byte, cur Item, found bool, n uint64) (Change, error) {
							read = cur.Seq
							return incr(v, cur, found, n)
						})
						if err != nil || seq <= read {
							t.Errorf("update: seq %d after %d: %v", seq, read, err)
							return
						}
						// Plain writes of other keys interleave.
						if err := db.Put([]byte("other-"+strconv.Itoa(i)), []byte("x")); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			total := func(db *DB) int {
				n := 0
				for k := range keys {
					v, err := db.Get([]byte("counter-" + strconv.Itoa(k)))
					require.NoError(t, err)
					c, err := strconv.Atoi(string(v))
					require.NoError(t, err)
					n += c
				}
				return n
			}
			require.Equal(t, workers*each, total(db))
			require.NoError(t, db.Close())
			db, err = Open(dir, o)
			require.NoError(t, err)
			defer db.Close()
			require.Equal(t, workers*each, total(db))
		})
	}
}
