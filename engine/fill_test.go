package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/vfs"
)

// blockingLoader loads "v:<key>" with a TTL of ttl once released.
type blockingLoader struct {
	calls   atomic.Int64
	started chan string
	release chan struct{}
	ttl     time.Duration
}

func newBlockingLoader(ttl time.Duration) *blockingLoader {
	return &blockingLoader{started: make(chan string, 100), release: make(chan struct{}), ttl: ttl}
}

func (l *blockingLoader) load(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
	l.calls.Add(1)
	l.started <- string(key)
	select {
	case <-l.release:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if string(key) == "absent" {
		return nil, 0, ErrNoData
	}
	return []byte("v:" + string(key)), l.ttl, nil
}

func fillOpts(fs vfs.FS, l fill.Loader) *Options {
	o := testOpts(fs)
	o.Loader = l
	o.Fill = fill.Options{Workers: 2, Retries: -1}
	return o
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func fillStats(t *testing.T, db *DB) fill.Stats {
	s, err := db.Stats()
	require.NoError(t, err)
	return s.Fill
}

func TestFillMissAnswersAtOnce(t *testing.T) {
	l := newBlockingLoader(0)
	db, err := Open("/db", fillOpts(vfs.NewMem(), l.load))
	require.NoError(t, err)
	defer db.Close()

	// The loader is blocked: every read still answers at once.
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, "k", <-l.started)
	for range 10 {
		_, err = db.Get([]byte("k"))
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, db.View([]byte("k"), func([]byte) error { return nil }), ErrNotFound)
	}
	ok, err := db.Has([]byte("other"))
	require.NoError(t, err)
	require.False(t, ok)
	s := fillStats(t, db)
	require.Equal(t, uint64(1), s.Queued, "Has does not queue")
	require.Equal(t, uint64(20), s.Coalesced)

	close(l.release)
	waitUntil(t, "the fill", func() bool { return fillStats(t, db).Filled == 1 })
	v, err := db.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, "v:k", string(v))
	require.Equal(t, int64(1), l.calls.Load())
}

func TestFillTTLAndNoData(t *testing.T) {
	l := newBlockingLoader(time.Minute)
	close(l.release)
	fs := vfs.NewMem()
	o := fillOpts(fs, l.load)
	var now atomic.Int64
	now.Store(time.Unix(2e9, 0).UnixMilli())
	o.Clock = func() time.Time { return time.UnixMilli(now.Load()) }
	o.Fill.NegativeTTL = time.Hour
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()

	_, err = db.Get([]byte("t"))
	require.ErrorIs(t, err, ErrNotFound)
	_, err = db.Get([]byte("absent"))
	require.ErrorIs(t, err, ErrNotFound)
	waitUntil(t, "the loads", func() bool { s := fillStats(t, db); return s.Filled == 1 && s.NotFound == 1 })
	_, it, err := db.AppendItem(nil, []byte("t"))
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(now.Load()).Add(time.Minute), it.Expiry)
	_, err = db.Get([]byte("absent"))
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, uint64(1), fillStats(t, db).Negative)

	// Past the TTL the key is gone and the next miss loads it again.
	now.Add(time.Minute.Milliseconds())
	_, err = db.Get([]byte("t"))
	require.ErrorIs(t, err, ErrNotFound)
	waitUntil(t, "the reload", func() bool { return fillStats(t, db).Filled == 2 })
	_, err = db.Get([]byte("t"))
	require.NoError(t, err)
}

// TestFillNeverOverwritesAWrite: a value a user writes (or deletes) while
// its key loads is the one that stays.
func TestFillNeverOverwritesAWrite(t *testing.T) {
	for _, w := range []struct {
		name  string
		write func(db *DB, k []byte) error
		want  string // "" means absent
	}{
		{"put", func(db *DB, k []byte) error { return db.Put(k, []byte("user")) }, "user"},
		{"put-then-delete", func(db *DB, k []byte) error {
			if err := db.Put(k, []byte("user")); err != nil {
				return err
			}
			return db.Delete(k)
		}, ""},
		{"batch", func(db *DB, k []byte) error {
			var b Batch
			b.Put(k, []byte("batch"))
			return db.Write(&b)
		}, "batch"},
		{"update", func(db *DB, k []byte) error {
			_, err := db.Update(k, func([]byte, Item, bool, uint64) (Change, error) {
				return Change{Op: Set, Value: []byte("upd")}, nil
			})
			return err
		}, "upd"},
	} {
		t.Run(w.name, func(t *testing.T) {
			l := newBlockingLoader(0)
			db, err := Open("/db", fillOpts(vfs.NewMem(), l.load))
			require.NoError(t, err)
			defer db.Close()
			k := []byte("key")
			_, err = db.Get(k)
			require.ErrorIs(t, err, ErrNotFound)
			<-l.started
			require.NoError(t, w.write(db, k))
			close(l.release)
			waitUntil(t, "the load", func() bool { return fillStats(t, db).Superseded == 1 })
			require.Equal(t, uint64(0), fillStats(t, db).Filled)
			v, err := db.Get(k)
			if w.want == "" {
				require.ErrorIs(t, err, ErrNotFound)
			} else {
				require.NoError(t, err)
				require.Equal(t, w.want, string(v))
			}
		})
	}
}

func TestFillCloseStoresLoadsInFlight(t *testing.T) {
	fs := vfs.NewMem()
	l := newBlockingLoader(0)
	db, err := Open("/db", fillOpts(fs, l.load))
	require.NoError(t, err)
	_, err = db.Get([]byte("inflight"))
	require.ErrorIs(t, err, ErrNotFound)
	<-l.started
	closed := make(chan error)
	go func() { closed <- db.Close() }()
	time.Sleep(20 * time.Millisecond)
	close(l.release)
	require.NoError(t, <-closed)

	db, err = Open("/db", testOpts(fs))
	require.NoError(t, err)
	defer db.Close()
	v, err := db.Get([]byte("inflight"))
	require.NoError(t, err, "a load in flight at Close is stored before the database closes")
	require.Equal(t, "v:inflight", string(v))
}

func TestFillHangingLoaderDoesNotBlockClose(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		<-hang // ignores its context
		return nil, 0, fmt.Errorf("late")
	}
	o := fillOpts(vfs.NewMem(), load)
	o.Fill.Timeout = 20 * time.Millisecond
	db, err := Open("/db", o)
	require.NoError(t, err)
	for i := range 10 {
		_, err := db.Get(fmt.Appendf(nil, "k%d", i))
		require.ErrorIs(t, err, ErrNotFound)
	}
	start := time.Now()
	require.NoError(t, db.Close())
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestFillOptionsChecked(t *testing.T) {
	l := newBlockingLoader(0)
	fs := vfs.NewMem()
	db, err := Open("/db", testOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Close())
	o := fillOpts(fs, l.load)
	o.ReadOnly = true
	_, err = Open("/db", o)
	require.ErrorIs(t, err, ErrBadOptions)
	o = fillOpts(fs, l.load)
	o.Fill.Workers = -3
	_, err = Open("/db", o)
	require.ErrorIs(t, err, ErrBadOptions)
	// The failed Open released the directory.
	db, err = Open("/db", testOpts(fs))
	require.NoError(t, err)
	require.NoError(t, db.Close())
}
