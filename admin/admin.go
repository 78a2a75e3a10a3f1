// Package admin serves a running database's administration over HTTP, for
// the program that holds it open: another process cannot open a database
// that a writer holds (marlin inspect and marlin checkpoint refuse it),
// so the embedding program mounts this handler instead:
//
//	http.Handle("/marlin/", http.StripPrefix("/marlin", admin.Handler(db)))
//
// Endpoints (JSON replies unless said otherwise; errors are JSON
// {"error": "..."} with a 4xx or 5xx status):
//
//	GET  /stats                     engine.Stats
//	GET  /keys?prefix=P&limit=N     keys, one per line (text; default limit 1000)
//	POST /checkpoint?dir=D[&copy=1] a consistent copy of the database in D (engine.CheckpointResult)
//	POST /compact                   a full compaction pass
//	POST /snapshot                  an index snapshot now
//	POST /sync                      fsync every write so far
//	GET  /base                      the base bundle under the database (engine.BaseInfo)
//	POST /fold[?path=F&memory=N]    fold base and delta into a new base and switch to it (engine.FoldStats)
//	POST /base?path=F               switch to the base bundle F (engine.FoldStats)
//
// The handler gives whoever reaches it control of the database (a
// checkpoint writes where it is told): serve it on a loopback or otherwise
// trusted address only. Writes are refused over GET, so a link or a
// browser prefetch cannot start one.
package admin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/marlinkv/marlin/engine"
)

// maxKeysLimit bounds /keys: a listing is one pass over the log and is
// held to this many keys per request.
const maxKeysLimit = 1_000_000

// Config adjusts the handler. The zero value is the default.
type Config struct {
	// PrepareFold, if set, adjusts every fold's options (POST /fold):
	// a memcached server's Server.PrepareFold, for a database it serves.
	PrepareFold func(o *engine.FoldOptions)
}

// Handler returns the administration handler of db. db stays the
// caller's: the handler never closes it.
func Handler(db *engine.DB) http.Handler { return HandlerWith(db, Config{}) }

// HandlerWith is Handler with a Config.
func HandlerWith(db *engine.DB, cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		st, err := db.Stats()
		reply(w, st, err)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) { keys(w, r, db) })
	mux.HandleFunc("POST /checkpoint", func(w http.ResponseWriter, r *http.Request) {
		dir := r.URL.Query().Get("dir")
		if dir == "" {
			fail(w, http.StatusBadRequest, errors.New("want ?dir=DEST, a new or empty directory"))
			return
		}
		res, err := db.CheckpointWith(dir, engine.CheckpointOptions{Copy: r.URL.Query().Get("copy") == "1"})
		reply(w, res, err)
	})
	mux.HandleFunc("POST /compact", func(w http.ResponseWriter, r *http.Request) { reply(w, done{true}, db.Compact()) })
	mux.HandleFunc("POST /snapshot", func(w http.ResponseWriter, r *http.Request) { reply(w, done{true}, db.Snapshot()) })
	mux.HandleFunc("POST /sync", func(w http.ResponseWriter, r *http.Request) { reply(w, done{true}, db.Sync()) })
	mux.HandleFunc("GET /base", func(w http.ResponseWriter, r *http.Request) { reply(w, db.Base(), nil) })
	mux.HandleFunc("POST /fold", func(w http.ResponseWriter, r *http.Request) {
		o := &engine.FoldOptions{Path: r.URL.Query().Get("path")}
		if s := r.URL.Query().Get("memory"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				fail(w, http.StatusBadRequest, errors.New("memory: want a number of bytes"))
				return
			}
			o.MemoryLimit = n
		}
		if cfg.PrepareFold != nil {
			cfg.PrepareFold(o)
		}
		// A client that goes away does not stop the fold: it switches
		// only when complete, and stopping it midway gains nothing.
		st, err := db.Fold(o)
		reply(w, st, err)
	})
	mux.HandleFunc("POST /base", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Query().Get("path")
		if path == "" {
			fail(w, http.StatusBadRequest, errors.New("want ?path=FILE, a bundle"))
			return
		}
		st, err := db.SetBase(path)
		reply(w, st, err)
	})
	return mux
}

// done is the reply of a command that returns nothing else.
type done struct {
	OK bool `json:"ok"` // always true: a failure replies with an error instead
}

func keys(w http.ResponseWriter, r *http.Request, db *engine.DB) {
	q := r.URL.Query()
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxKeysLimit {
			fail(w, http.StatusBadRequest, errors.New("limit: want a number from 1 to 1000000"))
			return
		}
		limit = n
	}
	prefix := []byte(q.Get("prefix"))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriter(w)
	n := 0
	var iterErr error
	for k := range db.All(&iterErr) {
		if !bytes.HasPrefix(k, prefix) {
			continue
		}
		// Keys are bytes: a key that is not plain text (or starts with a
		// quote) is written as a quoted Go string.
		if strconv.CanBackquote(string(k)) && k[0] != '"' {
			bw.Write(k)
		} else {
			bw.WriteString(strconv.Quote(string(k)))
		}
		bw.WriteByte('\n')
		if n++; n >= limit {
			break
		}
	}
	if iterErr != nil {
		// The status is sent already: say it in the body's last line.
		bw.WriteString("error: " + iterErr.Error() + "\n")
	}
	bw.Flush()
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, engine.ErrClosed):
			status = http.StatusServiceUnavailable
		case errors.Is(err, engine.ErrReadOnly):
			status = http.StatusConflict
		case errors.Is(err, engine.ErrBadOptions), errors.Is(err, fs.ErrNotExist):
			status = http.StatusBadRequest
		}
		fail(w, status, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
