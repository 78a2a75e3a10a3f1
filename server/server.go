package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/keynorm"
	"github.com/marlinkv/marlin/shared"
)

// Config holds a server's limits. Zero fields take memcached's defaults
// where one applies.
type Config struct {
	// MaxItemSize is the largest data block stored (memcached -I; 1 MiB).
	MaxItemSize int
	// MaxConns is the most connections served at once (memcached -c;
	// 1024); one more is accepted, told "SERVER_ERROR too many open
	// connections" and closed, as memcached does.
	MaxConns int
	// IdleTimeout closes a connection that sends nothing for that long
	// (0: never, as memcached by default).
	IdleTimeout time.Duration
	// WriteTimeout closes a connection that does not read its replies
	// for that long (default 30 s): a client that never reads must not
	// hold a goroutine and its buffers forever.
	WriteTimeout time.Duration
	// ReadTimeout closes a connection that has begun a command and does
	// not send the rest of it (its line and data block) for that long
	// (0: never, as memcached; IdleTimeout applies then if set).
	ReadTimeout time.Duration
	// Normalizer, if set, rewrites every key a client names to its
	// canonical form before it reaches the database (normalize.go).
	Normalizer *keynorm.Normalizer
	// Loader, if set, fills the database from a slow source without
	// making a reader wait: a get that misses answers at once and queues
	// the key (fill.go; fill.HTTPLoader for --fill-url). The database
	// itself must have no engine Loader: the server stores items, not
	// raw values. Fill configures the queue.
	Loader fill.Loader
	Fill   fill.Options // the fill queue's workers, queue size, retries and TTLs
	// SharedValues stores identical item data once (package shared):
	// keys whose data is equal refer to one stored copy, reclaimed with
	// its last key. The database must be empty the first time, and is
	// then always served with it on (New refuses the other way round).
	SharedValues bool
	// IO chooses how connections are served (IOAuto: event loops on
	// Linux unless every write waits for an fsync; loop.go).
	IO IOMode
	// Loops is how many event loops serve connections (0: one per core,
	// GOMAXPROCS).
	Loops int
	// Version is what "version" reports (default "1.6.18", a memcached 1.6
	// version: clients and memccapable change behaviour by it).
	Version string
	Logger  *slog.Logger // where the server logs (default: nowhere)
}

const (
	defaultMaxItem      = 1 << 20
	defaultMaxConns     = 1024
	defaultWriteTimeout = 30 * time.Second
	defaultVersion      = "1.6.18"
	// maxLine bounds a command line: a get of about 250 keys of 250
	// bytes. A longer line is refused and the connection closed.
	maxLine = 64 << 10
	// bufSize is a connection's read and write buffer size.
	bufSize = 4 << 10
)

// Server serves one database over memcached's text protocol.
type Server struct {
	db  backend    // the engine, or a shared store over it (store.go)
	edb *engine.DB // the engine itself (its base: parseStored)
	cfg Config
	log *slog.Logger

	// mu guards listeners, conns and closing.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup // connection and loop goroutines
	io        IOMode         // Config.IO resolved
	loops     []*loop        // started at the first connection they serve
	nextLoop  int            // the loop the next connection goes to

	stats   stats
	metrics *metrics // metrics.go

	// flush_all (flush.go): flushThreshold is read by every command;
	// flushMu guards flushTimer.
	flushThreshold atomic.Uint64
	flushStored    atomic.Bool // flushKey exists: one engine key that is no item
	flushMu        sync.Mutex
	flushTimer     *time.Timer
	sweep          sweeper       // removes flushed items (sweep.go)
	fill           *fill.Queue   // read-through fill queue (fill.go); nil without Config.Loader
	idleConns      atomic.Int64  // connections waiting without buffers (idle.go)
	reapOnce       sync.Once     // starts the idle reaper at the first connection (idle.go)
	reapStop       chan struct{} // closed by Shutdown
	releaseMu      sync.Mutex    // guards releaseTimer (idle.go)
	releaseTimer   *time.Timer
}

// New returns a server of db. The database's MaxValueSize must hold
// MaxItemSize plus an item header, and its MaxKeySize 250 bytes.
func New(db *engine.DB, cfg Config) (*Server, error) {
	if cfg.MaxItemSize == 0 {
		cfg.MaxItemSize = defaultMaxItem
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	if cfg.Version == "" {
		cfg.Version = defaultVersion
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	need := cfg.MaxItemSize + maxItemHeader
	if cfg.SharedValues {
		need += shared.InlineOverhead
	}
	switch {
	case cfg.Loops < 0:
		return nil, errors.New("server: negative Loops")
	case cfg.MaxItemSize < 0 || cfg.MaxConns < 0 || cfg.IdleTimeout < 0 || cfg.WriteTimeout < 0 || cfg.ReadTimeout < 0:
		return nil, errors.New("server: negative limit")
	case need > db.Limits().MaxValueSize:
		return nil, fmt.Errorf("server: items of %d bytes need the database's MaxValueSize at least %d (it is %d)",
			cfg.MaxItemSize, need, db.Limits().MaxValueSize)
	case cfg.SharedValues && db.Base().Path != "":
		return nil, errors.New("server: shared values cannot be served over a base bundle")
	case db.Limits().MaxKeySize < maxKeyLen:
		return nil, fmt.Errorf("server: the database's MaxKeySize %d is under memcached's 250", db.Limits().MaxKeySize)
	}
	io, err := ioMode(cfg.IO, db)
	if err != nil {
		return nil, err
	}
	if cfg.Loops == 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	st, err := openBackend(db, &cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{db: st, io: io, edb: db, cfg: cfg, log: cfg.Logger, reapStop: make(chan struct{}),
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	s.stats.started = time.Now()
	if err := s.loadFlush(); err != nil {
		return nil, err
	}
	if err := s.startFill(); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: closed")

// Serve accepts connections on ln until Shutdown (ErrServerClosed) or an
// accept error. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient failure: wait and
				// go on, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("marlin serve: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.stats.totalConns.Add(1)
		if !s.track(nc) {
			continue
		}
	}
}

// track starts serving nc, or refuses it when MaxConns are open or the
// server is closing. It reports whether nc is served.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	if s.closing || len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		s.stats.rejectedConns.Add(1)
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(nc, "SERVER_ERROR too many open connections\r\n")
		nc.Close()
		return false
	}
	if s.io == IOLoop && s.loopConn(nc) {
		return true
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.reapOnce.Do(func() { go s.reap(s.reapStop) })
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
		// Untracked before the socket closes: a client that sees the
		// close never counts itself in curr_connections afterwards.
		s.untrack(c)
		c.nc.Close()
	}()
	return true
}

// loopConn serves nc from an event loop (called with s.mu held, which it
// releases when it returns true). False: nc is no socket, or loops cannot
// run here; it is served by a goroutine then.
func (s *Server) loopConn(nc net.Conn) bool {
	if s.loops == nil {
		loops, err := newLoops(s, s.cfg.Loops)
		if err != nil {
			s.log.Error("marlin serve: event loops: serving a goroutine per connection", "err", err)
			s.io = IOGoroutine
			return false
		}
		s.loops = loops
	}
	fd, err := socketFD(nc)
	if err != nil {
		return false
	}
	c := &conn{s: s}
	c.ls.fd = fd
	l := s.loops[s.nextLoop%len(s.loops)]
	s.nextLoop++
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if err := l.add(c); err != nil {
		s.untrack(c)
		unix.Close(fd)
	}
	return true
}

// idleConnections counts the connections waiting for a command without
// buffers: parked ones (idle.go) and those of the event loops that hold
// nothing.
func (s *Server) idleConnections() int64 {
	n := s.idleConns.Load()
	for _, l := range s.eventLoops() {
		n += l.idle()
	}
	return n
}

// eventLoops returns the loops started so far.
func (s *Server) eventLoops() []*loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loops
}

// untrack forgets a connection that ends.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, lets every connection finish the command it
// is running (a connection waiting for its next command is closed at
// once), and waits for them until ctx ends. It does not close the
// database.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopFlush()
	s.mu.Lock()
	if !s.closing {
		close(s.reapStop)
	}
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		if c.lp == nil {
			c.shutdown()
		}
	}
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		l.stop()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		// Loads in flight store their items before the caller closes
		// the database.
		s.stopFill(ctx)
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			if c.lp == nil {
				c.nc.Close()
			}
		}
		s.mu.Unlock()
		for _, l := range loops {
			l.abort()
		}
		s.stopFill(ctx)
		return ctx.Err()
	}
}

// stats are the server's counters (memcached's "stats" names).
type stats struct {
	started       time.Time
	totalConns    atomic.Int64
	rejectedConns atomic.Int64
	cmdGet        atomic.Int64
	cmdSet        atomic.Int64
	cmdTouch      atomic.Int64
	cmdFlush      atomic.Int64
	getHits       atomic.Int64
	getMisses     atomic.Int64
	deleteHits    atomic.Int64
	deleteMisses  atomic.Int64
	incrHits      atomic.Int64
	incrMisses    atomic.Int64
	decrHits      atomic.Int64
	decrMisses    atomic.Int64
	casHits       atomic.Int64
	casMisses     atomic.Int64
	casBadval     atomic.Int64
	touchHits     atomic.Int64
	touchMisses   atomic.Int64
	bytesRead     atomic.Int64
	bytesWritten  atomic.Int64
}

// counters are st's counters; the first numReset are the ones "stats
// reset" zeroes (memcached keeps the connection totals' current values,
// and so does this).
func (st *stats) counters() [numCounters]*atomic.Int64 {
	return [numCounters]*atomic.Int64{&st.cmdGet, &st.cmdSet, &st.cmdTouch, &st.cmdFlush, &st.getHits, &st.getMisses,
		&st.deleteHits, &st.deleteMisses, &st.incrHits, &st.incrMisses, &st.decrHits, &st.decrMisses,
		&st.casHits, &st.casMisses, &st.casBadval, &st.touchHits, &st.touchMisses, &st.bytesRead, &st.bytesWritten,
		&st.rejectedConns, &st.totalConns}
}

const (
	numCounters = 21
	numReset    = 20
)

func (st *stats) reset() {
	cs := st.counters()
	for _, c := range cs[:numReset] {
		c.Store(0)
	}
}

// Counters are sharded: an event loop counts its connections' commands
// in a stats of its own (written by the goroutine serving the loop only,
// so no other core contends for the cache lines), the server the rest.

// totals returns the counters summed over the shards.
func (s *Server) totals() *stats {
	t := &stats{started: s.stats.started}
	tc := t.counters()
	add := func(st *stats) {
		for i, c := range st.counters() {
			tc[i].Add(c.Load())
		}
	}
	add(&s.stats)
	for _, l := range s.eventLoops() {
		add(&l.st)
	}
	return t
}

// resetStats is "stats reset".
func (s *Server) resetStats() {
	s.stats.reset()
	for _, l := range s.eventLoops() {
		l.st.reset()
	}
}
