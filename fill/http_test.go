package fill

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// source is an HTTP source whose answer depends on the key.
func source(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("key")
		if key == "" {
			key = strings.TrimPrefix(r.URL.Path, "/p/")
		}
		switch {
		case key == "missing":
			http.NotFound(w, r)
		case key == "boom":
			http.Error(w, "down", http.StatusInternalServerError)
		case key == "ttl":
			w.Header().Set("Cache-Control", "public, max-age=60")
			_, _ = w.Write([]byte("with ttl"))
		case key == "shared":
			w.Header().Set("Cache-Control", "max-age=60, s-maxage=5")
			_, _ = w.Write([]byte("s"))
		case key == "nostore":
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write([]byte("x"))
		case key == "big":
			_, _ = w.Write(make([]byte, 2000))
		default:
			_, _ = w.Write([]byte("value of " + key))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPLoader(t *testing.T) {
	srv := source(t)
	load, err := HTTPLoader(srv.URL+"/get?key={key}", 1000, nil)
	require.NoError(t, err)
	ctx := context.Background()

	v, ttl, err := load(ctx, []byte("a b&c=d|é"))
	require.NoError(t, err)
	require.Equal(t, "value of a b&c=d|é", string(v), "the key reaches the source unchanged")
	require.Zero(t, ttl)

	v, ttl, err = load(ctx, []byte("ttl"))
	require.NoError(t, err)
	require.Equal(t, "with ttl", string(v))
	require.Equal(t, time.Minute, ttl)

	_, ttl, err = load(ctx, []byte("shared"))
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, ttl, "s-maxage wins for a shared cache")

	_, ttl, err = load(ctx, []byte("nostore"))
	require.NoError(t, err)
	require.Negative(t, ttl, "no-store: not to be stored")

	_, _, err = load(ctx, []byte("missing"))
	require.ErrorIs(t, err, ErrNoData)

	_, _, err = load(ctx, []byte("boom"))
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNoData)
	require.Contains(t, err.Error(), "500")

	_, _, err = load(ctx, []byte("big"))
	require.ErrorContains(t, err, "value limit")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = load(cctx, []byte("a"))
	require.ErrorIs(t, err, context.Canceled)
}

func TestHTTPLoaderKeyInPath(t *testing.T) {
	srv := source(t)
	load, err := HTTPLoader(srv.URL+"/p/{key}", 1000, nil)
	require.NoError(t, err)
	v, _, err := load(context.Background(), []byte("x/y?z"))
	require.NoError(t, err)
	require.Equal(t, "value of x/y?z", string(v))
}

func TestHTTPLoaderBadTemplates(t *testing.T) {
	for _, u := range []string{"http://h/no-placeholder", "ftp://h/{key}", "/{key}", "http://%zz/{key}"} {
		_, err := HTTPLoader(u, 100, nil)
		require.ErrorIs(t, err, ErrBadURL, u)
	}
	_, err := HTTPLoader("http://h/{key}", 0, nil)
	require.ErrorIs(t, err, ErrBadOptions)
}

func TestCacheTTL(t *testing.T) {
	for _, c := range []struct {
		h     []string
		ttl   time.Duration
		store bool
	}{
		{nil, 0, true},
		{[]string{"max-age=10"}, 10 * time.Second, true},
		{[]string{"public", "max-age=\"7\""}, 7 * time.Second, true},
		{[]string{"max-age=0"}, 0, false},
		{[]string{"max-age=10, private"}, 0, false},
		{[]string{"No-Cache"}, 0, false},
		{[]string{"max-age=abc"}, 0, true},
		{[]string{"max-age=99999999999999"}, 0, true},
	} {
		ttl, store := cacheTTL(c.h)
		require.Equal(t, c.ttl, ttl, "%q", c.h)
		require.Equal(t, c.store, store, "%q", c.h)
	}
}

// TestHTTPFillEndToEnd runs a queue on an HTTP source.
func TestHTTPFillEndToEnd(t *testing.T) {
	srv := source(t)
	load, err := HTTPLoader(srv.URL+"/get?key={key}", 1000, nil)
	require.NoError(t, err)
	st := newMemStore()
	q := newQueue(t, load, st, Options{Retries: 1, Backoff: time.Millisecond})
	for _, k := range []string{"ttl", "missing", "boom", "plain"} {
		require.Equal(t, Queued, q.Miss([]byte(k)))
	}
	waitFor(t, "the loads", func() bool {
		s := q.Stats()
		return s.Filled == 2 && s.NotFound == 1 && s.Failed == 1
	})
	v, _ := st.get("plain")
	require.Equal(t, "value of plain", v)
	require.Equal(t, time.Minute, st.ttls["ttl"])
	require.Equal(t, uint64(1), q.Stats().Retried)
	require.Equal(t, Negative, q.Miss([]byte("missing")))
}
