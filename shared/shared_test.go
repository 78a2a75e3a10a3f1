package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/keynorm"
	"github.com/marlinkv/marlin/vfs"
)

// fakeClock is a settable clock for TTL tests (Unix ms).
type fakeClock struct{ ms atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func dbOpts(fs vfs.FS, clock *fakeClock) *engine.Options {
	o := &engine.Options{FS: fs, SegmentSize: 64 << 10, WriteBufferSize: 4096, Sync: engine.SyncNone,
		CompactionThreshold: -1, ExpiryInterval: -1, IndexReserve: 1 << 26,
		SnapshotInterval: time.Hour, SnapshotRecords: 1 << 40, Logger: slog.New(slog.DiscardHandler)}
	if clock != nil {
		o.Clock = clock.Now
	}
	return o
}

// headerPrefix is a test Prefix: the first byte says how many bytes
// after it are the key's own header.
func headerPrefix(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + int(v[0])
}

func openStore(t *testing.T, fs vfs.FS, clock *fakeClock, o Options) (*engine.DB, *Store) {
	t.Helper()
	db, err := engine.Open("/db", dbOpts(fs, clock))
	require.NoError(t, err)
	s, err := Open(db, o)
	require.NoError(t, err)
	return db, s
}

func requireCheck(t *testing.T, s *Store) Report {
	t.Helper()
	rep, err := s.Check()
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)
	return rep
}

// valueRecords lists the hashes of the stored shared values.
func valueRecords(t *testing.T, db *engine.DB) map[hash]bool {
	t.Helper()
	out := map[hash]bool{}
	require.NoError(t, db.ForEach(func(k, _ []byte) error {
		if IsReserved(k) && k[len(Reserved)] == kindValue {
			out[hash(k[len(Reserved)+1:])] = true
		}
		return nil
	}))
	return out
}

// TestShareAndReclaim: two keys with one value store it once; deleting
// one keeps it, deleting the other reclaims it; inline values are not
// shared.
func TestShareAndReclaim(t *testing.T) {
	db, s := openStore(t, vfs.NewMem(), nil, Options{})
	defer db.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 128) // 2 KiB
	require.NoError(t, s.Put([]byte("a"), big))
	require.NoError(t, s.Put([]byte("b"), big))
	require.NoError(t, s.Put([]byte("small"), []byte("tiny")))
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 3, Refs: 2, Values: 1, StoredBytes: 2048, LogicalBytes: 4096, BytesSaved: 2048, KeysPerValue: 2}, st)
	require.Len(t, valueRecords(t, db), 1)
	for _, k := range []string{"a", "b"} {
		v, err := s.Get([]byte(k))
		require.NoError(t, err)
		require.Equal(t, big, v)
	}
	v, err := s.Get([]byte("small"))
	require.NoError(t, err)
	require.Equal(t, "tiny", string(v))
	requireCheck(t, s)

	require.NoError(t, s.Delete([]byte("a")))
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 2, Refs: 1, Values: 1, StoredBytes: 2048, LogicalBytes: 2048, KeysPerValue: 1}, st)
	v, err = s.Get([]byte("b"))
	require.NoError(t, err)
	require.Equal(t, big, v)
	_, err = s.Get([]byte("a"))
	require.ErrorIs(t, err, engine.ErrNotFound)

	// Overwriting the last reference reclaims the value too.
	require.NoError(t, s.Put([]byte("b"), []byte("now small")))
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 2}, st)
	require.Empty(t, valueRecords(t, db))
	require.NoError(t, s.Delete([]byte("b")))
	require.NoError(t, s.Delete([]byte("b")), "deleting an absent key")
	requireCheck(t, s)

	// Everything the store stored is one record per key plus its own
	// bookkeeping (format and the no-expiry bucket).
	est, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(1+2), est.Keys)
}

// TestPrefix: the per-key prefix is kept per key; only the rest is
// shared.
func TestPrefix(t *testing.T) {
	db, s := openStore(t, vfs.NewMem(), nil, Options{MinSize: 8, Prefix: headerPrefix})
	defer db.Close()
	data := []byte("shared data, long enough")
	v1 := append([]byte{3, 'x', 'y', 'z'}, data...)
	v2 := append([]byte{1, 'q'}, data...)
	v3 := append([]byte{0}, data...)
	for i, v := range [][]byte{v1, v2, v3} {
		require.NoError(t, s.Put([]byte("k"+strconv.Itoa(i)), v))
	}
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Values)
	require.Equal(t, int64(3), st.Refs)
	require.Equal(t, int64(len(data)), st.StoredBytes)
	for i, v := range [][]byte{v1, v2, v3} {
		got, it, err := s.AppendItem([]byte("dst:"), []byte("k"+strconv.Itoa(i)))
		require.NoError(t, err)
		require.Equal(t, append([]byte("dst:"), v...), got)
		require.NotZero(t, it.Seq)
	}
	// A prefix longer than the value is clamped: all of it is the key's,
	// stored inline. So is data under MinSize after the prefix.
	require.NoError(t, s.Put([]byte("all-prefix"), []byte{200, 'a', 'b'}))
	require.NoError(t, s.Put([]byte("short-data"), append([]byte{2, 'a', 'b'}, "1234567"...)))
	for k, want := range map[string][]byte{"all-prefix": {200, 'a', 'b'}, "short-data": append([]byte{2, 'a', 'b'}, "1234567"...)} {
		got, err := s.Get([]byte(k))
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(5), st.Keys)
	require.Equal(t, int64(3), st.Refs)
	requireCheck(t, s)
}

// TestReservedKeys: the store's own keys cannot be named.
func TestReservedKeys(t *testing.T) {
	db, s := openStore(t, vfs.NewMem(), nil, Options{})
	defer db.Close()
	k := []byte(Reserved + "v0123456789abcdef")
	require.ErrorIs(t, s.Put(k, []byte("x")), ErrReservedKey)
	require.ErrorIs(t, s.PutTTL(k, []byte("x"), time.Hour), ErrReservedKey)
	require.ErrorIs(t, s.Delete(k), ErrReservedKey)
	_, err := s.Get(k)
	require.ErrorIs(t, err, ErrReservedKey)
	_, err = s.Update(k, func([]byte, engine.Item, bool, uint64) (engine.Change, error) { return engine.Change{}, nil })
	require.ErrorIs(t, err, ErrReservedKey)
	_, err = s.Get(formatKey())
	require.ErrorIs(t, err, ErrReservedKey)
	// Keys that only resemble it are the user's.
	require.NoError(t, s.Put([]byte("\x00shared"), []byte("x")))
	require.NoError(t, s.Put([]byte("shared."), []byte("x")))
	var keys []string
	require.NoError(t, s.ForEach(func(k, _ []byte, _ engine.Item) error { keys = append(keys, string(k)); return nil }))
	require.ElementsMatch(t, []string{"\x00shared", "shared."}, keys)
}

// TestUpdate: Update sees the whole value and the key record's version,
// returns the key record's sequence number (next), and its decisions
// move the references.
func TestUpdate(t *testing.T) {
	clock := newClock()
	db, s := openStore(t, vfs.NewMem(), clock, Options{MinSize: 8, Prefix: headerPrefix})
	defer db.Close()
	k := []byte("k")
	data := []byte("0123456789")
	var next uint64
	seq, err := s.Update(k, func(v []byte, it engine.Item, found bool, n uint64) (engine.Change, error) {
		require.False(t, found)
		require.Nil(t, v)
		next = n
		return engine.Change{Op: engine.Set, Value: append([]byte{1, 'h'}, data...)}, nil
	})
	require.NoError(t, err)
	require.Equal(t, next, seq)
	v, it, err := s.AppendItem(nil, k)
	require.NoError(t, err)
	require.Equal(t, append([]byte{1, 'h'}, data...), v)
	require.Equal(t, seq, it.Seq, "the version is the key record's")

	// A touch: same value, an expiry; then a header change only.
	exp := clock.Now().Add(time.Hour)
	seq2, err := s.Update(k, func(v []byte, it engine.Item, found bool, n uint64) (engine.Change, error) {
		require.True(t, found)
		require.Equal(t, seq, it.Seq)
		require.Equal(t, append([]byte{1, 'h'}, data...), v)
		return engine.Change{Op: engine.Set, Value: v, Expiry: exp}, nil
	})
	require.NoError(t, err)
	require.Greater(t, seq2, seq)
	_, it, err = s.AppendItem(nil, k)
	require.NoError(t, err)
	require.Equal(t, engine.Item{Seq: seq2, Expiry: exp}, it)
	_, err = s.Update(k, func(v []byte, it engine.Item, _ bool, _ uint64) (engine.Change, error) {
		v[1] = 'H'
		return engine.Change{Op: engine.Set, Value: v, Expiry: it.Expiry}, nil
	})
	require.NoError(t, err)
	v, err = s.Get(k)
	require.NoError(t, err)
	require.Equal(t, append([]byte{1, 'H'}, data...), v)
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 1, Refs: 1, Values: 1, StoredBytes: 10, LogicalBytes: 10, KeysPerValue: 1}, st)

	// Keep writes nothing; an error cancels; an expiry in the past and
	// Remove delete.
	seq, err = s.Update(k, func([]byte, engine.Item, bool, uint64) (engine.Change, error) {
		return engine.Change{Op: engine.Keep}, nil
	})
	require.NoError(t, err)
	require.Zero(t, seq)
	boom := errors.New("boom")
	_, err = s.Update(k, func([]byte, engine.Item, bool, uint64) (engine.Change, error) {
		return engine.Change{Op: engine.Remove}, boom
	})
	require.ErrorIs(t, err, boom)
	_, err = s.Get(k)
	require.NoError(t, err)
	seq, err = s.Update(k, func(v []byte, _ engine.Item, _ bool, _ uint64) (engine.Change, error) {
		return engine.Change{Op: engine.Set, Value: v, Expiry: clock.Now()}, nil
	})
	require.NoError(t, err)
	require.NotZero(t, seq)
	_, err = s.Get(k)
	require.ErrorIs(t, err, engine.ErrNotFound)
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{}, st)
	seq, err = s.Update(k, func([]byte, engine.Item, bool, uint64) (engine.Change, error) {
		return engine.Change{Op: engine.Remove}, nil
	})
	require.NoError(t, err)
	require.Zero(t, seq, "removing an absent key writes nothing")
	_, err = s.Update(k, func([]byte, engine.Item, bool, uint64) (engine.Change, error) {
		return engine.Change{Op: engine.Set, Value: make([]byte, s.Limits().MaxValueSize+1)}, nil
	})
	require.ErrorIs(t, err, engine.ErrValueTooLarge)
	requireCheck(t, s)
}

// TestExpiryReclaims: a value whose keys all expired is reclaimed by its
// own expiry within a bucket of the last key's; Stats count the keys
// until then; a key without expiry keeps the value forever.
func TestExpiryReclaims(t *testing.T) {
	clock := newClock()
	db, s := openStore(t, vfs.NewMem(), clock, Options{})
	defer db.Close()
	data := bytes.Repeat([]byte{7}, 100)
	require.NoError(t, s.PutTTL([]byte("t1"), data, 10*time.Second))
	require.NoError(t, s.PutTTL([]byte("t2"), data, 80*time.Second))
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Values)
	require.Equal(t, int64(2), st.Refs)

	clock.Advance(81 * time.Second) // both keys expired
	for _, k := range []string{"t1", "t2"} {
		_, err := s.Get([]byte(k))
		require.ErrorIs(t, err, engine.ErrNotFound)
	}
	// Within a bucket (at most 80s/8 = 10s) of t2's expiry, everything
	// is gone, with no write.
	clock.Advance(10 * time.Second)
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{}, st)
	require.Empty(t, valueRecords(t, db))
	requireCheck(t, s)

	// A key without expiry among TTL keys: the value never expires.
	require.NoError(t, s.PutTTL([]byte("t1"), data, time.Second))
	require.NoError(t, s.Put([]byte("p"), data))
	require.NoError(t, s.PutTTL([]byte("t2"), data, time.Second))
	clock.Advance(time.Hour)
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 1, Refs: 1, Values: 1, StoredBytes: 100, LogicalBytes: 100, KeysPerValue: 1}, st)
	// Its last key without expiry gone, the value expires with the TTL
	// keys: here they expired long ago, so it goes at once.
	require.NoError(t, s.PutTTL([]byte("t3"), data, time.Minute))
	require.NoError(t, s.Delete([]byte("p")))
	requireCheck(t, s)
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Values)
	clock.Advance(time.Minute + 8*time.Second)
	st, err = s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{}, st)
	require.Empty(t, valueRecords(t, db))
}

// TestGrid: a bucket is at or after the expiry, by less than an eighth
// of the TTL (or the smallest step), and among the candidates Stats
// reads for as long as it is ahead.
func TestGrid(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		now := int64(1_600_000_000_000) + rnd.Int64N(1<<40)
		ttl := int64(1) + rnd.Int64N(1<<uint(rnd.IntN(45)))
		e := min(now+ttl, maxExpiry)
		if e <= now {
			continue
		}
		k := levelFor(now, e)
		g := bucketOf(e, k)
		require.GreaterOrEqual(t, g, e)
		require.Less(t, g-e, max((e-now)/8+1, 1<<minLevel), "ttl %d", e-now)
		for _, later := range []int64{now, now + (g-now)/2, g - 1} {
			require.Contains(t, candidates(later, 1<<k), g, "ttl %d at +%d", e-now, later-now)
		}
	}
	require.Equal(t, []int64{0}, candidates(123456, 0))
}

// TestRecordsDecode: the decoders refuse damaged records without
// panicking, and round-trip what the encoders write.
func TestRecordsDecode(t *testing.T) {
	m := meta{size: 1000, perm: 3, vexp: 5 << 20, buckets: []bucketCount{{1 << 20, 2}, {3 << 20, 1}, {5 << 20, 7}}}
	got, err := decodeMeta(m.encode())
	require.NoError(t, err)
	require.Equal(t, m, got)
	tt := totals{keys: 5, refs: -1, logical: 1 << 40, values: 2, stored: 9, levels: 1<<10 | 1<<20}
	gotT, err := decodeTotals(tt.encode())
	require.NoError(t, err)
	require.Equal(t, tt, gotT)
	r := keyRec{ref: true, level: 12, pre: []byte("hdr"), h: hashOf([]byte("x"))}
	gotR, err := parseKeyRec(appendKeyRec(nil, r))
	require.NoError(t, err)
	require.Equal(t, r, gotR)

	rnd := rand.New(rand.NewPCG(3, 4))
	for _, enc := range [][]byte{m.encode(), tt.encode(), appendKeyRec(nil, r)} {
		for range 2000 {
			b := append([]byte(nil), enc[:rnd.IntN(len(enc)+1)]...)
			for range rnd.IntN(3) {
				if len(b) > 0 {
					b[rnd.IntN(len(b))] = byte(rnd.Uint32())
				}
			}
			_, _ = decodeMeta(b)
			_, _ = decodeTotals(b)
			_, _ = parseKeyRec(b)
		}
	}
	for _, b := range [][]byte{nil, {0x40}, {tagRef}, {tagRef, 5, 'a'}} {
		_, err := parseKeyRec(b)
		require.ErrorIs(t, err, ErrBadRecord, "%x", b)
	}
	_, err = decodeMeta(append(m.encode(), 0))
	require.ErrorIs(t, err, ErrBadRecord)
}

// TestOpenRefuses: what a store cannot work over.
func TestOpenRefuses(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/plain", dbOpts(fs, nil))
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("k"), []byte("plain value")))
	_, err = Open(db, Options{})
	require.ErrorIs(t, err, ErrNotShared)
	ok, err := Formatted(db)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, db.Close())

	n, err := keynorm.New(keynorm.Options{Sep: []byte("|")})
	require.NoError(t, err)
	o := dbOpts(fs, nil)
	o.KeyNormalizer = n
	db, err = engine.Open("/norm", o)
	require.NoError(t, err)
	_, err = Open(db, Options{})
	require.ErrorIs(t, err, engine.ErrBadOptions)
	require.NoError(t, db.Close())

	o = dbOpts(fs, nil)
	o.Loader = func(context.Context, []byte) ([]byte, time.Duration, error) { return nil, 0, engine.ErrNoData }
	db, err = engine.Open("/loader", o)
	require.NoError(t, err)
	_, err = Open(db, Options{})
	require.ErrorIs(t, err, engine.ErrBadOptions)
	require.NoError(t, db.Close())

	// A store's database reopens as one, and read-only too.
	db, s := openStore(t, fs, nil, Options{})
	_, err = Open(db, Options{MinSize: -1})
	require.ErrorIs(t, err, engine.ErrBadOptions)
	require.NoError(t, s.Put([]byte("k"), bytes.Repeat([]byte("v"), 100)))
	ok, err = Formatted(db)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, db.Close())
	ro := dbOpts(fs, nil)
	ro.ReadOnly = true
	db, err = engine.Open("/db", ro)
	require.NoError(t, err)
	defer db.Close()
	s, err = Open(db, Options{})
	require.NoError(t, err)
	v, err := s.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte("v"), 100), v)
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Values)
	require.ErrorIs(t, s.Put([]byte("k"), nil), engine.ErrReadOnly)
}

// TestConcurrent: writers overwrite and delete a few keys with values
// from a small set while readers read them: every read returns a whole
// value of the set (never another key's data, never a torn one), and
// afterwards Check and Stats agree with the keys. Run with -race.
func TestConcurrent(t *testing.T) {
	db, s := openStore(t, vfs.NewMem(), nil, Options{MinSize: 8, Prefix: headerPrefix})
	defer db.Close()
	const keys, writers, readers, each = 8, 3, 3, 400
	vals := make([][]byte, 5)
	valid := map[string]bool{}
	for i := range vals {
		vals[i] = bytes.Repeat([]byte{byte('a' + i)}, 20+i*50)
		valid[string(vals[i])] = true
	}
	key := func(i int) []byte { return []byte("key-" + strconv.Itoa(i)) }
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 9))
			for range each {
				k := key(rnd.IntN(keys))
				var err error
				switch rnd.IntN(4) {
				case 0:
					err = s.Delete(k)
				default:
					hdr := []byte{2, byte(w), byte(rnd.Uint32())}
					err = s.Put(k, append(hdr, vals[rnd.IntN(len(vals))]...))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for r := range readers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(r), 10))
			var buf []byte
			for range each {
				var err error
				buf, err = s.AppendValue(buf[:0], key(rnd.IntN(keys)))
				if errors.Is(err, engine.ErrNotFound) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if len(buf) < 3 || !valid[string(buf[3:])] {
					errs <- fmt.Errorf("read %q", buf)
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
	rep := requireCheck(t, s)
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, rep.Keys, st.Keys)
	require.Equal(t, rep.Refs, st.Refs)
	require.Equal(t, rep.Values, st.Values)
}

// TestDanglingRepair: a key whose value record is gone (damage: nothing
// the store does leaves one) reads as a miss, is reported by Check, and
// is repaired by writing or deleting the key.
func TestDanglingRepair(t *testing.T) {
	db, s := openStore(t, vfs.NewMem(), nil, Options{})
	defer db.Close()
	data := bytes.Repeat([]byte("d"), 100)
	for _, k := range []string{"a", "b"} {
		require.NoError(t, s.Put([]byte(k), data))
	}
	require.NoError(t, db.Delete(valueKey(hashOf(data))))
	_, err := s.Get([]byte("a"))
	require.ErrorIs(t, err, ErrDangling)
	require.ErrorIs(t, err, engine.ErrNotFound)
	rep, err := s.Check()
	require.NoError(t, err)
	require.False(t, rep.OK())

	_, err = s.Update([]byte("a"), func(v []byte, _ engine.Item, found bool, _ uint64) (engine.Change, error) {
		require.False(t, found, "a dangling key reads as absent")
		require.Nil(t, v)
		return engine.Change{Op: engine.Set, Value: []byte("fresh")}, nil
	})
	require.NoError(t, err)
	require.NoError(t, s.Delete([]byte("b")))
	v, err := s.Get([]byte("a"))
	require.NoError(t, err)
	require.Equal(t, "fresh", string(v))
	requireCheck(t, s)
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, Stats{Keys: 1}, st)
}
