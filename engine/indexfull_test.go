package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// shardKey names a key that placedHash puts into shard sn with the i-th
// of a fixed sequence of fingerprints (top: the shard's all-ones
// fingerprint, which growth cannot separate).
func shardKey(sn, i int, top bool) []byte {
	if top {
		return fmt.Appendf(nil, "top/%d/%d", sn, i)
	}
	return fmt.Appendf(nil, "key/%d/%d", sn, i)
}

// placedHash is a test hash that sends shardKey's keys where they say.
func placedHash(key []byte) uint64 {
	var sn, i int
	var fp uint64
	if _, err := fmt.Sscanf(string(key), "top/%d/%d", &sn, &i); err == nil {
		fp = 1<<index.FPBits - 1
	} else if _, err := fmt.Sscanf(string(key), "key/%d/%d", &sn, &i); err == nil {
		x := uint64(i+1) * 0x9e3779b97f4a7c15
		fp = (x ^ x>>29) >> (64 - index.FPBits)
	} else {
		panic("placedHash: " + string(key))
	}
	return uint64(sn)<<(64-index.ShardBits) | fp<<(64-index.ShardBits-index.FPBits) | uint64(i)&0xffff
}

// fillIndexClasses puts keys into shards 0..3 until shard r's capacity is
// the r-th rung: four block classes, one 16 MiB chunk each, which is all of
// a 64 MiB reservation. It returns the keys put.
func fillIndexClasses(t *testing.T, db *DB) [][]byte {
	var keys [][]byte
	for sn := 0; sn < 4; sn++ {
		for i := 0; ; i++ {
			if st := statsOrFail(t, db).Index; st.AddressBytes >= int64(sn+1)<<24 && st.Classes == sn+1 {
				break
			}
			k := shardKey(sn, i, false)
			require.NoError(t, db.Put(k, k))
			keys = append(keys, k)
		}
	}
	require.Equal(t, int64(64<<20), statsOrFail(t, db).Index.AddressBytes)
	return keys
}

func indexFullOptions(fs vfs.FS) *Options {
	o := &Options{FS: fs, Logger: discardLogger, IndexReserve: 64 << 20, SegmentSize: 1 << 20,
		Sync: SyncNone, CompactionThreshold: -1}
	o.hash = placedHash
	return o
}

// TestIndexFullFailsWriteNotHandle: when the index cannot grow (its
// reservation is used up, or crafted keys collide), a Put and a batch fail
// with the index's error, write nothing, and the handle keeps working.
// Before, a batch inserted its new keys after appending its records, and
// an index error there failed the handle ("db handle failed") with the
// batch half applied.
func TestIndexFullFailsWriteNotHandle(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", indexFullOptions(fs))
	require.NoError(t, err)
	present := fillIndexClasses(t, db)

	// Shard 4 grows through the four classes into a fifth: no chunk left.
	var full []byte
	for i := 0; full == nil; i++ {
		k := shardKey(4, i, false)
		if err := db.Put(k, k); err != nil {
			require.ErrorIs(t, err, index.ErrFull)
			require.ErrorContains(t, err, "IndexReserve")
			full = k
			break
		}
		present = append(present, k)
	}
	_, err = db.Get(full)
	require.ErrorIs(t, err, ErrNotFound)

	// A batch with new keys of shard 4 (overflowing), an overwrite, a
	// delete and new keys of other shards fails as a whole.
	size := loggedBytes(db)
	var b Batch
	b.Put(shardKey(7, 0, false), []byte("new"))
	b.Put(present[0], []byte("overwritten"))
	b.Delete(present[1])
	b.Put(full, []byte("x"))
	b.Put(shardKey(8, 0, false), []byte("new"))
	err = db.Write(&b)
	require.ErrorIs(t, err, index.ErrFull)
	require.Equal(t, size, loggedBytes(db), "the failed batch appended nothing")
	require.NoError(t, db.Put(present[3], present[3]), "the handle survives")
	require.ErrorContains(t, err, "batch op 3")
	for _, k := range [][]byte{shardKey(7, 0, false), full, shardKey(8, 0, false)} {
		_, err := db.Get(k)
		require.ErrorIs(t, err, ErrNotFound, "%s: the failed batch's new keys are taken out", k)
	}
	for _, k := range present {
		v, err := db.Get(k)
		require.NoError(t, err)
		require.Equal(t, k, v)
	}
	require.NoError(t, db.ix.Check())

	// Crafted keys that share the top fingerprint of shard 9: the tenth
	// cannot be placed (ErrCollision), in a batch too.
	b.Reset()
	for i := 0; i <= index.Overflow+1; i++ {
		b.Put(shardKey(9, i, true), []byte("c"))
	}
	err = db.Write(&b)
	require.ErrorIs(t, err, index.ErrCollision)
	_, err = db.Get(shardKey(9, 0, true))
	require.ErrorIs(t, err, ErrNotFound)

	// The handle still works: writes that need no new class succeed.
	b.Reset()
	b.Put(present[0], []byte("after"))
	b.Put(shardKey(7, 0, false), []byte("new"))
	b.Delete(present[1])
	require.NoError(t, db.Write(&b))
	require.NoError(t, db.Put(present[2], []byte("after")))
	require.NoError(t, db.Sync())
	require.NoError(t, db.Close())

	// Reopened (full replay: snapshots of placed hashes load the same way),
	// the failed writes left no trace.
	o := indexFullOptions(fs)
	o.IndexReserve = 1 << 30
	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for _, k := range [][]byte{full, shardKey(8, 0, false), shardKey(9, 0, true)} {
		_, err := db.Get(k)
		require.ErrorIs(t, err, ErrNotFound, "%s", k)
	}
	v, err := db.Get(present[0])
	require.NoError(t, err)
	require.Equal(t, "after", string(v))
	_, err = db.Get(present[1])
	require.ErrorIs(t, err, ErrNotFound)
	v, err = db.Get(shardKey(7, 0, false))
	require.NoError(t, err)
	require.Equal(t, "new", string(v))
	require.Equal(t, int64(len(present)), statsOrFail(t, db).Keys)
}

// TestBatchRepeatedNewKeys: a batch that puts, deletes and puts again keys
// absent before it (their entries enter the index before the records are
// appended) ends with the right values and live byte counts, and reopens
// the same.
func TestBatchRepeatedNewKeys(t *testing.T) {
	fs := vfs.NewMem()
	o := &Options{FS: fs, Logger: discardLogger, SegmentSize: 1 << 20, Sync: SyncNone, CompactionThreshold: -1}
	db, err := Open("/db", o)
	require.NoError(t, err)
	var b Batch
	b.Delete([]byte("a")) // absent: nothing to delete, then put
	b.Put([]byte("a"), []byte("a1"))
	b.Put([]byte("b"), []byte("b1"))
	b.Put([]byte("b"), []byte("b2"))
	b.Put([]byte("c"), []byte("c1"))
	b.Delete([]byte("c"))
	b.Put([]byte("d"), []byte("d1"))
	b.Delete([]byte("d"))
	b.Put([]byte("d"), []byte("d2"))
	b.Delete([]byte("e")) // absent, deleted twice before its first put
	b.Delete([]byte("e"))
	b.Put([]byte("e"), []byte("e1"))
	require.NoError(t, db.Write(&b))
	check := func(db *DB) {
		t.Helper()
		for k, want := range map[string]string{"a": "a1", "b": "b2", "d": "d2", "e": "e1"} {
			v, err := db.Get([]byte(k))
			require.NoError(t, err, k)
			require.Equal(t, want, string(v))
		}
		_, err := db.Get([]byte("c"))
		require.ErrorIs(t, err, ErrNotFound)
		st := statsOrFail(t, db)
		require.Equal(t, int64(4), st.Keys)
		var live int64
		for _, k := range []string{"a", "b", "d", "e"} {
			v, _ := db.Get([]byte(k))
			live += int64(segment.Size(len(k), len(v), false))
		}
		require.Equal(t, live, st.LiveBytes)
		require.NoError(t, db.ix.Check())
	}
	check(db)
	require.NoError(t, db.Close())
	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	check(db)
}

func statsOrFail(t *testing.T, db *DB) Stats {
	t.Helper()
	st, err := db.Stats()
	require.NoError(t, err)
	return st
}

// loggedBytes is what the log holds, flushed or still in the write
// buffer, read under db.mu: a background flush (which holds it) cannot
// move bytes from the buffer to a file between the two figures. (Read
// without it, the sum once came out short under load.)
func loggedBytes(db *DB) int64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	n := db.tail.n.Load()
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			n += sf.flushed.Load()
		}
	}
	return n
}
