package server

import (
	"bufio"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Idle connections. A connection waiting for its client's next command
// holds no buffers once it has waited idleGrace: its 4 KiB reader and
// writer go back to pools and the goroutine waits on a one-byte read of
// its own. Waiting costs a command nothing: the connection notes when it
// began to wait (under its mutex), and the server's reaper, every half
// grace, wakes each connection that has waited a grace by setting its
// read deadline to now; the woken connection parks. So a busy connection
// sets no deadline per command (unless a read or idle timeout is
// configured) and never parks, and 10,000 idle clients cost a goroutine
// and a socket each.

// idleGrace is how long a connection waits with its buffers held.
const idleGrace = time.Second

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

// firstByte is the reader a connection's buffered reader reads from: the
// byte that ended an idle wait, then the socket.
type firstByte struct {
	c *conn
	b [1]byte
	n int
}

func (f *firstByte) Read(p []byte) (int, error) {
	if f.n > 0 && len(p) > 0 {
		p[0], f.n = f.b[0], 0
		f.c.st.bytesRead.Add(1)
		return 1, nil
	}
	n, err := f.c.nc.Read(p)
	f.c.st.bytesRead.Add(int64(n))
	return n, err
}

// waitCommand returns when the next command has begun to arrive (true),
// or when the connection is to end: the client closed it, the idle
// timeout passed, or the server shuts down (false). The reader holds
// nothing when it is called.
func (c *conn) waitCommand() bool {
	var deadline time.Time
	if idle := c.s.cfg.IdleTimeout; idle > 0 {
		deadline = time.Now().Add(idle)
		_ = c.nc.SetReadDeadline(deadline)
	} else if c.cmdDeadline {
		_ = c.nc.SetReadDeadline(deadline)
		c.cmdDeadline = false
	}
	c.mu.Lock()
	c.waitingSince = nanotime()
	c.mu.Unlock()
	_, err := c.r.Peek(1)
	c.mu.Lock()
	c.waitingSince = 0
	kicked := c.kicked
	c.kicked = false
	c.mu.Unlock()
	if err == nil {
		if kicked {
			// The reaper's deadline came after the command did.
			_ = c.nc.SetReadDeadline(deadline)
		}
		return true
	}
	if !kicked || !errors.Is(err, os.ErrDeadlineExceeded) || c.stopping.Load() {
		return false
	}
	c.park()
	_ = c.nc.SetReadDeadline(deadline)
	// Shutdown sets stopping before it sets the deadline to now: seen
	// false here, its deadline comes after the one just set.
	if c.stopping.Load() {
		return false
	}
	n, _ := c.nc.Read(c.first.b[:])
	if n == 0 {
		return false
	}
	c.first.n = n
	c.unpark()
	return true
}

// nanotime is a monotonic clock reading in nanoseconds.
func nanotime() int64 { return int64(time.Since(processStart)) }

var processStart = time.Now()

// reap wakes, every half grace until stop is closed, each connection
// that has waited for a command for idleGrace, so that it parks.
func (s *Server) reap(stop chan struct{}) {
	t := time.NewTicker(idleGrace / 2)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := nanotime()
		s.mu.Lock()
		for c := range s.conns {
			c.mu.Lock()
			if c.waitingSince != 0 && !c.kicked && now-c.waitingSince >= int64(idleGrace) {
				c.kicked = true
				_ = c.nc.SetReadDeadline(time.Now())
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// park gives the connection's (empty) buffers back to the pools.
func (c *conn) park() {
	c.r.Reset(nil)
	readerPool.Put(c.r)
	c.w.Reset(nil)
	writerPool.Put(c.w)
	c.r, c.w = nil, nil
	c.parked = true
	if c.s.idleConns.Add(1)%releaseEvery == 0 {
		c.s.releaseMemory()
	}
}

// releaseEvery: each time this many more connections are idle, the freed
// buffers are handed back to the operating system.
const releaseEvery = 1024

// releaseMemory returns freed memory to the operating system: two
// seconds after the last call (when the connections that went idle
// together have all parked), two GCs (the pools keep what they hold
// through one) and a scavenge, in the background. Without it an idle
// server keeps its parked connections' buffers and grown stacks: the
// pools drop them and stacks shrink only at GCs, which an idle server
// seldom runs, and the heap returns pages slowly. The engine's memory is
// off the Go heap, so the GCs are short.
func (s *Server) releaseMemory() {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	if s.releaseTimer != nil {
		s.releaseTimer.Reset(releaseDelay)
		return
	}
	s.releaseTimer = time.AfterFunc(releaseDelay, func() {
		runtime.GC()
		debug.FreeOSMemory()
	})
}

const releaseDelay = 2 * time.Second

// unpark takes buffers for the connection from the pools.
func (c *conn) unpark() {
	c.r = readerPool.Get().(*bufio.Reader)
	c.r.Reset(&c.first)
	c.w = writerPool.Get().(*bufio.Writer)
	c.w.Reset(&c.out)
	c.unmark()
}

// unmark ends the connection's count as parked (unpark, or its end).
func (c *conn) unmark() {
	if c.parked {
		c.parked = false
		c.s.idleConns.Add(-1)
	}
}
