package fill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memStore is a Store into a map that, like the real ones, writes only
// absent keys.
type memStore struct {
	mu   sync.Mutex
	m    map[string]string
	ttls map[string]time.Duration
}

func newMemStore() *memStore {
	return &memStore{m: map[string]string{}, ttls: map[string]time.Duration{}}
}

func (s *memStore) store(key, value []byte, ttl time.Duration, valid func() bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[string(key)]; ok || !valid() {
		return false, nil
	}
	s.m[string(key)] = string(value)
	s.ttls[string(key)] = ttl
	return true, nil
}

func (s *memStore) get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok
}

// gate is a loader that blocks every load until released and counts calls.
type gate struct {
	calls   atomic.Int64
	started chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan string, 1000), release: make(chan struct{})}
}

func (g *gate) load(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
	g.calls.Add(1)
	g.started <- string(key)
	select {
	case <-g.release:
		return []byte("v:" + string(key)), time.Minute, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func newQueue(t *testing.T, load Loader, st *memStore, o Options) *Queue {
	t.Helper()
	q, err := New(load, st.store, o)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.Close(ctx)
	})
	return q
}

// waitFor polls cond until it holds or 5 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMissAnswersAtOnceThenFills(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q := newQueue(t, g.load, st, Options{})
	// The loader is blocked: Miss must still return (it never waits).
	require.Equal(t, Queued, q.Miss([]byte("a")))
	require.Equal(t, "a", <-g.started)
	_, ok := st.get("a")
	require.False(t, ok, "nothing stored while the load is blocked")
	close(g.release)
	waitFor(t, "the fill", func() bool { return q.Stats().Filled == 1 })
	v, ok := st.get("a")
	require.True(t, ok)
	require.Equal(t, "v:a", v)
	require.Equal(t, time.Minute, st.ttls["a"])
	s := q.Stats()
	require.Equal(t, uint64(1), s.Queued)
	require.Equal(t, 0, s.Pending)
	require.Equal(t, int64(1), s.Load.Count)
	require.Equal(t, int64(1), s.Wait.Count)
}

func TestCoalescing(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q := newQueue(t, g.load, st, Options{Workers: 4})
	require.Equal(t, Queued, q.Miss([]byte("k")))
	<-g.started
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				require.Equal(t, Coalesced, q.Miss([]byte("k")))
			}
		})
	}
	wg.Wait()
	close(g.release)
	waitFor(t, "the fill", func() bool { return q.Stats().Filled == 1 })
	require.Equal(t, int64(1), g.calls.Load(), "one load for all the misses")
	s := q.Stats()
	require.Equal(t, uint64(800), s.Coalesced)
	require.Equal(t, uint64(1), s.Queued)
}

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q := newQueue(t, g.load, st, Options{Workers: 1, QueueSize: 2})
	require.Equal(t, Queued, q.Miss([]byte("k0")))
	<-g.started // the only worker holds k0
	require.Equal(t, Queued, q.Miss([]byte("k1")))
	require.Equal(t, Queued, q.Miss([]byte("k2")))
	for i := range 100 {
		require.Equal(t, Dropped, q.Miss(fmt.Appendf(nil, "x%d", i)))
	}
	s := q.Stats()
	require.Equal(t, uint64(100), s.Dropped)
	require.Equal(t, 2, s.QueueDepth)
	require.Equal(t, 1, s.InFlight)
	require.Equal(t, 3, s.Pending)
	close(g.release)
	waitFor(t, "the fills", func() bool { return q.Stats().Filled == 3 })
	// A dropped key is not pending: its next miss queues it.
	require.Equal(t, Queued, q.Miss([]byte("x0")))
}

func TestNegativeCaching(t *testing.T) {
	st := newMemStore()
	var calls atomic.Int64
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		calls.Add(1)
		return nil, 0, fmt.Errorf("source: %w", ErrNoData)
	}
	q := newQueue(t, load, st, Options{NegativeTTL: time.Hour})
	var now atomic.Int64
	now.Store(time.Unix(1e9, 0).UnixNano())
	q.nowFn = func() time.Time { return time.Unix(0, now.Load()) }

	require.Equal(t, Queued, q.Miss([]byte("gone")))
	waitFor(t, "the load", func() bool { return q.Stats().NotFound == 1 })
	for range 50 {
		require.Equal(t, Negative, q.Miss([]byte("gone")))
	}
	require.Equal(t, int64(1), calls.Load())
	require.Equal(t, uint64(50), q.Stats().Negative)

	// After the negative TTL the key is loaded again.
	now.Add(int64(time.Hour))
	require.Equal(t, Queued, q.Miss([]byte("gone")))
	waitFor(t, "the second load", func() bool { return q.Stats().NotFound == 2 })
	require.Equal(t, int64(2), calls.Load())

	// A write forgets the absence.
	require.Equal(t, Negative, q.Miss([]byte("gone")))
	q.Invalidate([]byte("gone"))
	require.Equal(t, Queued, q.Miss([]byte("gone")))
	waitFor(t, "the third load", func() bool { return q.Stats().NotFound == 3 })
	_, ok := st.get("gone")
	require.False(t, ok)
}

func TestNegativeCacheBounded(t *testing.T) {
	st := newMemStore()
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		return nil, 0, ErrNoData
	}
	const max = 100
	q := newQueue(t, load, st, Options{NegativeTTL: time.Hour, NegativeMax: max, Workers: 1})
	for i := range 5000 {
		for q.Miss(fmt.Appendf(nil, "k%d", i)) == Dropped {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(t, "the loads", func() bool { return q.Stats().NotFound == 5000 })
	q.mu.Lock()
	n, order := len(q.neg), len(q.negOrder)-q.negHead
	q.mu.Unlock()
	require.Equal(t, max, n)
	require.LessOrEqual(t, order, max+1)
	// The newest are remembered, the oldest forgotten.
	require.Equal(t, Negative, q.Miss([]byte("k4999")))
	require.Equal(t, Queued, q.Miss([]byte("k0")))
}

func TestRetriesThenSuccess(t *testing.T) {
	st := newMemStore()
	var calls atomic.Int64
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		if calls.Add(1) <= 2 {
			return nil, 0, errors.New("source down")
		}
		return []byte("ok"), 0, nil
	}
	q := newQueue(t, load, st, Options{Retries: 2, Backoff: time.Millisecond})
	require.Equal(t, Queued, q.Miss([]byte("r")))
	// Misses during the retries are coalesced into the pending key.
	require.Equal(t, Coalesced, q.Miss([]byte("r")))
	waitFor(t, "the fill", func() bool { return q.Stats().Filled == 1 })
	s := q.Stats()
	require.Equal(t, uint64(2), s.Retried)
	require.Equal(t, uint64(0), s.Failed)
	require.Equal(t, int64(3), calls.Load())
	v, _ := st.get("r")
	require.Equal(t, "ok", v)
}

func TestRetriesExhausted(t *testing.T) {
	st := newMemStore()
	var calls atomic.Int64
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		calls.Add(1)
		return nil, 0, errors.New("source down")
	}
	q := newQueue(t, load, st, Options{Retries: 3, Backoff: time.Millisecond})
	require.Equal(t, Queued, q.Miss([]byte("f")))
	waitFor(t, "the failure", func() bool { return q.Stats().Failed == 1 })
	require.Equal(t, int64(4), calls.Load(), "one attempt and three retries")
	require.Equal(t, uint64(3), q.Stats().Retried)
	require.Equal(t, 0, q.Stats().Pending)
	// A failure is not remembered: the next miss tries again.
	require.Equal(t, Queued, q.Miss([]byte("f")))
}

func TestHangingLoaderTimesOut(t *testing.T) {
	st := newMemStore()
	var calls atomic.Int64
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		calls.Add(1)
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	q := newQueue(t, load, st, Options{Workers: 2, Timeout: 20 * time.Millisecond, Retries: -1})
	start := time.Now()
	for i := range 10 {
		require.NotEqual(t, Closed, q.Miss(fmt.Appendf(nil, "h%d", i)))
	}
	require.Less(t, time.Since(start), time.Second, "misses never wait for the loader")
	waitFor(t, "the timeouts", func() bool { return q.Stats().Failed == 10 })
	require.Equal(t, int64(10), calls.Load())
	require.GreaterOrEqual(t, q.Stats().Load.P50, 20*time.Millisecond)
}

func TestInvalidateDiscardsLoad(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q := newQueue(t, g.load, st, Options{})
	require.Equal(t, Queued, q.Miss([]byte("w")))
	<-g.started
	// A client writes the key while it loads.
	q.Invalidate([]byte("w"))
	close(g.release)
	waitFor(t, "the load", func() bool { return q.Stats().Superseded == 1 })
	_, ok := st.get("w")
	require.False(t, ok, "a load started before a write must not be stored")
	require.Equal(t, uint64(0), q.Stats().Filled)
}

func TestLoaderPanicIsAFailure(t *testing.T) {
	st := newMemStore()
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		if string(key) == "bad" {
			panic("boom")
		}
		return []byte("fine"), 0, nil
	}
	q := newQueue(t, load, st, Options{Workers: 1, Retries: -1})
	require.Equal(t, Queued, q.Miss([]byte("bad")))
	waitFor(t, "the failure", func() bool { return q.Stats().Failed == 1 })
	require.Equal(t, Queued, q.Miss([]byte("good")))
	waitFor(t, "the fill", func() bool { return q.Stats().Filled == 1 })
}

func TestStoreErrorCounted(t *testing.T) {
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) { return []byte("v"), 0, nil }
	store := func(key, value []byte, ttl time.Duration, valid func() bool) (bool, error) {
		return false, errors.New("disk full")
	}
	q, err := New(load, store, Options{})
	require.NoError(t, err)
	defer q.Close(context.Background())
	q.Miss([]byte("s"))
	waitFor(t, "the failure", func() bool { return q.Stats().StoreErrors == 1 })
	require.Equal(t, uint64(1), q.Stats().Failed)
}

func TestCloseWaitsForLoadsInFlight(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q, err := New(g.load, st.store, Options{Workers: 1})
	require.NoError(t, err)
	q.Miss([]byte("a"))
	<-g.started
	q.Miss([]byte("b")) // waits in the queue
	closed := make(chan error)
	go func() { closed <- q.Close(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a load in flight")
	case <-time.After(50 * time.Millisecond):
	}
	require.Equal(t, Closed, q.Miss([]byte("c")))
	close(g.release)
	require.NoError(t, <-closed)
	v, ok := st.get("a")
	require.True(t, ok, "the load in flight is stored")
	require.Equal(t, "v:a", v)
	_, ok = st.get("b")
	require.False(t, ok)
	s := q.Stats()
	require.Equal(t, uint64(1), s.Abandoned)
	require.Equal(t, 0, s.Pending)
	require.ErrorIs(t, q.Close(context.Background()), ErrClosed)
}

func TestCloseGraceCancelsLoads(t *testing.T) {
	st := newMemStore()
	g := newGate()
	q, err := New(g.load, st.store, Options{Workers: 2, Timeout: time.Hour, Backoff: time.Hour})
	require.NoError(t, err)
	q.Miss([]byte("a"))
	q.Miss([]byte("b"))
	<-g.started
	<-g.started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, q.Close(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
	waitFor(t, "the loads to see their context cancelled", func() bool { return q.Stats().InFlight == 0 })
	require.Equal(t, uint64(2), q.Stats().Failed, "a cancelled load is not retried after Close")
	_, ok := st.get("a")
	require.False(t, ok)
}

func TestCloseAbandonsRetries(t *testing.T) {
	st := newMemStore()
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		return nil, 0, errors.New("down")
	}
	q, err := New(load, st.store, Options{Backoff: time.Hour})
	require.NoError(t, err)
	q.Miss([]byte("a"))
	waitFor(t, "the retry to wait", func() bool { return q.Stats().WaitingRetry == 1 })
	start := time.Now()
	require.NoError(t, q.Close(context.Background()))
	require.Less(t, time.Since(start), time.Second, "Close does not wait out a backoff")
	s := q.Stats()
	require.Equal(t, uint64(1), s.Abandoned)
	require.Equal(t, 0, s.WaitingRetry)
	require.Equal(t, 0, s.Pending)
}

func TestRetryBacklogBounded(t *testing.T) {
	st := newMemStore()
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) {
		return nil, 0, errors.New("down")
	}
	q := newQueue(t, load, st, Options{QueueSize: 10, Backoff: time.Hour, Workers: 1})
	for i := 0; q.Stats().Failed == 0; i++ {
		q.Miss(fmt.Appendf(nil, "k%d", i))
		time.Sleep(50 * time.Microsecond)
		require.Less(t, i, 1_000_000)
	}
	s := q.Stats()
	require.Equal(t, 10, s.WaitingRetry)
	require.LessOrEqual(t, s.Pending, 10+10+1)
}

func TestOptionsValidated(t *testing.T) {
	load := func(ctx context.Context, key []byte) ([]byte, time.Duration, error) { return nil, 0, nil }
	store := func(key, value []byte, ttl time.Duration, valid func() bool) (bool, error) { return true, nil }
	for _, o := range []Options{{Workers: -1}, {QueueSize: -5}, {Workers: maxWorkers + 1}, {Backoff: -1}, {Timeout: -1}, {NegativeMax: -1}} {
		_, err := New(load, store, o)
		require.ErrorIs(t, err, ErrBadOptions, "%+v", o)
	}
	_, err := New(nil, store, Options{})
	require.ErrorIs(t, err, ErrBadOptions)
	q, err := New(load, store, Options{Retries: -1, NegativeTTL: -1})
	require.NoError(t, err)
	require.Equal(t, 0, q.Options().Retries)
	require.Equal(t, DefaultWorkers, q.Options().Workers)
	require.NoError(t, q.Close(context.Background()))
}

func TestStatsSub(t *testing.T) {
	a := Stats{Queued: 10, Filled: 4, Dropped: 2, Pending: 3}
	b := Stats{Queued: 25, Filled: 9, Dropped: 2, Pending: 1}
	d := b.Sub(a)
	require.Equal(t, uint64(15), d.Queued)
	require.Equal(t, uint64(5), d.Filled)
	require.Equal(t, uint64(0), d.Dropped)
	require.Equal(t, 1, d.Pending)
}
