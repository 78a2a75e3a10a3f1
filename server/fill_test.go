package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/fill"
)

// slowSource is an HTTP source that holds every request until released
// (or its gate is open) and counts requests per key.
type slowSource struct {
	srv     *httptest.Server
	mu      sync.Mutex
	hits    map[string]int
	gate    chan struct{} // closed: answer at once
	started chan string
}

func newSlowSource(t *testing.T) *slowSource {
	src := &slowSource{hits: map[string]int{}, gate: make(chan struct{}), started: make(chan string, 100)}
	src.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("k")
		src.mu.Lock()
		src.hits[key]++
		src.mu.Unlock()
		src.started <- key
		select {
		case <-src.gate:
		case <-r.Context().Done():
			return
		}
		switch {
		case strings.HasPrefix(key, "none"):
			http.NotFound(w, r)
		case strings.HasPrefix(key, "ttl"):
			w.Header().Set("Cache-Control", "max-age=100")
			_, _ = w.Write([]byte("T" + key))
		default:
			_, _ = w.Write([]byte("from source: " + key))
		}
	}))
	t.Cleanup(src.srv.Close)
	return src
}

func (src *slowSource) count(key string) int {
	src.mu.Lock()
	defer src.mu.Unlock()
	return src.hits[key]
}

func fillConfig(t *testing.T, src *slowSource) Config {
	l, err := fill.HTTPLoader(src.srv.URL+"/?k={key}", 1<<20, nil)
	require.NoError(t, err)
	return Config{Loader: l, Fill: fill.Options{Workers: 4, NegativeTTL: time.Hour, Retries: -1}}
}

func waitFill(t *testing.T, s *Server, what string, cond func(fill.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(s.fill.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, s.fill.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFillMissAnswersAtOnce: while the source holds the load, every
// protocol's get answers "not found" at once; once loaded, all hit; the
// source was asked once.
func TestFillMissAnswersAtOnce(t *testing.T) {
	src := newSlowSource(t)
	addr, s, _ := startServer(t, "", fillConfig(t, src))

	require.Equal(t, "END\r\n", exchange(t, addr, "get k1\r\n"))
	require.Equal(t, "k1", <-src.started)
	// The load is held: more misses answer at once and are coalesced.
	require.Equal(t, "END\r\nEN\r\n", exchange(t, addr, "gets k1\r\nmg k1 v\r\n"))
	got := binSession(t, addr, [][]byte{binRequest(opGet, []byte("k1"), nil, nil, 0)})
	require.Len(t, got, 1)
	require.Contains(t, got[0], "Not found")
	require.Equal(t, uint64(3), s.fill.Stats().Coalesced)

	close(src.gate)
	waitFill(t, s, "the fill", func(f fill.Stats) bool { return f.Filled == 1 })
	require.Equal(t, "VALUE k1 0 15\r\nfrom source: k1\r\nEND\r\n", exchange(t, addr, "get k1\r\n"))
	require.Equal(t, "VA 15 f0\r\nfrom source: k1\r\n", exchange(t, addr, "mg k1 v f\r\n"))
	require.Equal(t, 1, src.count("k1"))

	// The meta and binary protocols queue too.
	require.Equal(t, "EN\r\n", exchange(t, addr, "mg k2 v\r\n"))
	binSession(t, addr, [][]byte{binRequest(opGet, []byte("k3"), nil, nil, 0)})
	waitFill(t, s, "the fills", func(f fill.Stats) bool { return f.Filled == 3 })
	require.Equal(t, "VALUE k2 0 15\r\nfrom source: k2\r\nVALUE k3 0 15\r\nfrom source: k3\r\nEND\r\n",
		exchange(t, addr, "get k2 k3\r\n"))

	// A mg that creates the item (N) does not queue it.
	require.Equal(t, "VA 0 W\r\n\r\n", exchange(t, addr, "mg k4 N30 v\r\n"))
	time.Sleep(20 * time.Millisecond)
	require.Equal(t, 0, src.count("k4"))
}

func TestFillNegativeAndTTL(t *testing.T) {
	src := newSlowSource(t)
	close(src.gate)
	addr, s, _ := startServer(t, "", fillConfig(t, src))
	require.Equal(t, "END\r\n", exchange(t, addr, "get none1 ttl1\r\n"))
	waitFill(t, s, "the loads", func(f fill.Stats) bool { return f.Filled == 1 && f.NotFound == 1 })
	for range 5 {
		require.Equal(t, "END\r\n", exchange(t, addr, "get none1\r\n"))
	}
	require.Equal(t, 1, src.count("none1"), "no data is remembered for the negative TTL")
	require.Equal(t, uint64(5), s.fill.Stats().Negative)
	// Cache-Control max-age=100 became the item's TTL.
	out := exchange(t, addr, "mg ttl1 t v\r\n")
	require.True(t, out == "VA 5 t100\r\nTttl1\r\n" || out == "VA 5 t99\r\nTttl1\r\n", out)

	// A client's set makes the key known again at once.
	require.Equal(t, "STORED\r\nVALUE none1 7 1\r\nx\r\nEND\r\n", exchange(t, addr, "set none1 7 0 1\r\nx\r\nget none1\r\n"))
}

// TestFillNeverOverwritesAClient: a set or delete made while the key
// loads wins over the load.
func TestFillNeverOverwritesAClient(t *testing.T) {
	src := newSlowSource(t)
	addr, s, _ := startServer(t, "", fillConfig(t, src))
	require.Equal(t, "END\r\n", exchange(t, addr, "get a b\r\n"))
	<-src.started
	<-src.started
	require.Equal(t, "STORED\r\nSTORED\r\nDELETED\r\n", exchange(t, addr, "set a 1 0 4\r\nmine\r\nset b 1 0 4\r\nmine\r\ndelete b\r\n"))
	close(src.gate)
	waitFill(t, s, "the loads", func(f fill.Stats) bool { return f.Superseded == 2 })
	require.Equal(t, uint64(0), s.fill.Stats().Filled)
	require.Equal(t, "VALUE a 1 4\r\nmine\r\nEND\r\n", exchange(t, addr, "get a\r\n"))
	require.Equal(t, "EN\r\n", exchange(t, addr, "mg b v\r\n"), "b stays deleted: the load did not bring it back")
}

// TestFillStatsAndMetrics: "stats" and /metrics report the queue.
func TestFillStatsAndMetrics(t *testing.T) {
	src := newSlowSource(t)
	close(src.gate)
	addr, s, _ := startServer(t, "", fillConfig(t, src))
	exchange(t, addr, "get m1 m2 none2\r\n")
	waitFill(t, s, "the loads", func(f fill.Stats) bool { return f.Filled == 2 && f.NotFound == 1 })
	out := exchange(t, addr, "stats\r\n")
	for _, l := range []string{"STAT fill_queued 3\r\n", "STAT fill_filled 2\r\n", "STAT fill_not_found 1\r\n",
		"STAT fill_pending 0\r\n", "STAT fill_dropped 0\r\n", "STAT fill_in_flight 0\r\n"} {
		require.Contains(t, out, l)
	}
	require.Contains(t, out, "STAT fill_load_p99_us ")

	hs := httptest.NewServer(s.MetricsHandler())
	defer hs.Close()
	fams := scrape(t, hs.URL+"/metrics")
	require.Equal(t, 3.0, metricValue(t, fams, "marlin_fill_events_total", "event", "queued"))
	require.Equal(t, 2.0, metricValue(t, fams, "marlin_fill_events_total", "event", "filled"))
	require.Equal(t, 0.0, metricValue(t, fams, "marlin_fill_keys", "state", "in_flight"))
	sum := findMetric(t, fams, "marlin_fill_load_seconds").Summary
	require.NotNil(t, sum)
	require.Equal(t, uint64(3), sum.GetSampleCount())
	require.Positive(t, sum.GetSampleSum())
}

// TestFillShutdownStoresLoadsInFlight: Shutdown lets a load in flight
// finish and store its item before the database closes.
func TestFillShutdownStoresLoadsInFlight(t *testing.T) {
	src := newSlowSource(t)
	dir := t.TempDir()
	addr, s, db, done := openServer(t, dir, fillConfig(t, src))
	require.Equal(t, "END\r\n", exchange(t, addr, "get late\r\n"))
	<-src.started
	var shut atomic.Bool
	go func() {
		time.Sleep(30 * time.Millisecond)
		if !shut.Load() {
			close(src.gate)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	shut.Store(true)
	require.ErrorIs(t, <-done, ErrServerClosed)
	require.Equal(t, uint64(1), s.fill.Stats().Filled)
	require.NoError(t, db.Close())

	addr, _, _ = startServer(t, dir, Config{})
	require.Equal(t, "VALUE late 0 17\r\nfrom source: late\r\nEND\r\n", exchange(t, addr, "get late\r\n"))
}
