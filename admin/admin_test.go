package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(filepath.Join(dir, "db"), &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	for _, k := range []string{"user:1", "user:2", "session:1", "user:\x00bin"} {
		require.NoError(t, db.Put([]byte(k), []byte("v")))
	}
	srv := httptest.NewServer(Handler(db))
	defer srv.Close()
	call := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}

	code, body := call("GET", "/stats")
	require.Equal(t, 200, code)
	var st engine.Stats
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Equal(t, int64(4), st.Keys)

	code, body = call("GET", "/keys?prefix=user:")
	require.Equal(t, 200, code)
	require.ElementsMatch(t, []string{"user:1", "user:2", `"user:\x00bin"`}, strings.Fields(body))
	code, body = call("GET", "/keys?limit=2")
	require.Equal(t, 200, code)
	require.Len(t, strings.Fields(body), 2)
	code, _ = call("GET", "/keys?limit=0")
	require.Equal(t, 400, code)

	// The database is held open here; another process could not open it
	// to copy it, the handler can.
	dest := filepath.Join(dir, "copy")
	code, body = call("POST", "/checkpoint?dir="+dest+"&copy=1")
	require.Equal(t, 200, code, body)
	var res engine.CheckpointResult
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	require.Positive(t, res.Copied)
	code, body = call("POST", "/checkpoint?dir="+dest)
	require.Equal(t, 500, code)
	require.Contains(t, body, "is not empty")
	code, _ = call("POST", "/checkpoint")
	require.Equal(t, 400, code)
	code, _ = call("GET", "/checkpoint?dir="+filepath.Join(dir, "x"))
	require.Equal(t, http.StatusMethodNotAllowed, code, "no write over GET")
	_, err = os.Stat(filepath.Join(dir, "x"))
	require.ErrorIs(t, err, os.ErrNotExist)

	for _, p := range []string{"/compact", "/snapshot", "/sync"} {
		code, body = call("POST", p)
		require.Equal(t, 200, code, p)
		require.JSONEq(t, `{"ok":true}`, body)
	}

	require.NoError(t, db.Close())
	code, body = call("GET", "/stats")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "closed")

	cp, err := engine.Open(dest, &engine.Options{ReadOnly: true})
	require.NoError(t, err)
	defer cp.Close()
	v, err := cp.Get([]byte("user:1"))
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
}

// TestFoldAndBase: a running database folds into a new base and switches
// bases through the handler, and reads go on seeing the same pairs.
func TestFoldAndBase(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(filepath.Join(dir, "db"), &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	defer db.Close()
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, db.Put([]byte(k), []byte("v-"+k)))
	}
	srv := httptest.NewServer(Handler(db))
	defer srv.Close()
	post := func(path string) (int, string) {
		resp, err := http.Post(srv.URL+path, "", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	out := filepath.Join(dir, "first.bundle")
	code, body := post("/fold?path=" + out)
	require.Equal(t, 200, code, body)
	var st engine.FoldStats
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.EqualValues(t, 3, st.Pairs)
	require.EqualValues(t, 3, st.Dropped)

	resp, err := http.Get(srv.URL + "/base")
	require.NoError(t, err)
	var bi engine.BaseInfo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&bi))
	resp.Body.Close()
	require.Equal(t, out, bi.Path)
	require.EqualValues(t, 3, bi.Pairs)
	v, err := db.Get([]byte("b"))
	require.NoError(t, err)
	require.Equal(t, "v-b", string(v))

	// Folding into the current base's file is refused; a missing bundle
	// is a bad request too.
	code, _ = post("/fold?path=" + out)
	require.Equal(t, 400, code)
	code, _ = post("/base?path=" + filepath.Join(dir, "missing.bundle"))
	require.Equal(t, 400, code)
	code, _ = post("/base")
	require.Equal(t, 400, code)

	require.NoError(t, db.Delete([]byte("a")))
	code, body = post("/fold")
	require.Equal(t, 200, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	_, err = db.Get([]byte("a"))
	require.ErrorIs(t, err, engine.ErrNotFound)
	require.NoError(t, db.Put([]byte("d"), []byte("v-d")))
	code, body = post("/base?path=" + out) // a switch keeps the delta's writes on top
	require.Equal(t, 200, code, body)
	v, err = db.Get([]byte("d"))
	require.NoError(t, err)
	require.Equal(t, "v-d", string(v))
}
