package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection, served by one goroutine. Its buffers are
// its own: a 4 KiB reader and writer, a line buffer that grows to at most
// maxLine for long lines, and a data buffer for the current storage
// command (at most MaxItemSize+2). Replies are flushed when no further
// command is already buffered, so a pipeline gets one write per batch.
type conn struct {
	s      *Server
	nc     net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	line   []byte   // a line longer than the reader's buffer, assembled
	toks   [][]byte // scratch tokens
	data   []byte   // the current storage command's data block
	key    []byte   // the current storage command's key (a copy)
	mline  []byte   // the current ms command's line (a copy)
	nbuf   []byte   // a multi-key get's normalized keys (normalize.go)
	nkeys  [][2]int // their offsets in nbuf
	val    []byte   // scratch for reads
	nbuf24 [24]byte // scratch for a number being formatted (numBuf)
	nbufB  [24]byte // a second, for a number kept while numBuf formats another
	out    deadlineWriter
	first  firstByte // what r reads from (idle.go)
	parked bool      // r and w are back in their pools (idle.go)
	werr   error     // the first failed write to the socket
	op     metricOp  // the running command's latency histogram (metrics.go)

	cmdDeadline bool      // a ReadTimeout deadline is set (idle.go)
	wdl         time.Time // the socket's write deadline

	// mu guards busy, waitingSince and kicked. busy is set while a
	// command runs; shutdown closes a connection that is not busy at once
	// and tells a busy one to stop after it. waitingSince (nanotime; 0:
	// not waiting) and kicked are the idle reaper's (idle.go).
	mu           sync.Mutex
	busy         bool
	waitingSince int64
	kicked       bool
	stopping     atomic.Bool

	// A connection an event loop serves (loop.go) has lp set and no nc,
	// no goroutine and no buffers of its own while it waits: r and w are
	// its loop's while it is served.
	lp *loop
	ls loopState

	lat *latencyShard // where its commands' latencies go (metrics.go)
	st  *stats        // where its counters go: the server's, or its loop's (Server.totals)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, lat: &s.metrics.shared, st: &s.stats}
	c.out = deadlineWriter{c}
	c.first.c = c
	c.unpark()
	return c
}

// need notes that the command being read needs n more bytes from here:
// an event loop does not read it again until they have come (loop.go).
func (c *conn) need(n int) {
	if c.lp != nil {
		c.ls.needAt = c.ls.src.pos - c.r.Buffered() + n
	}
}

// deadlineWriter is what the buffered writer writes to: every write to the
// socket gets between half of WriteTimeout and all of it (a reply larger than the buffer goes straight
// through, not only through flush), and the first failure is kept in
// c.werr, which ends the connection after the command (a client that
// does not read its replies must not go on being served into the void).
type deadlineWriter struct{ c *conn }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	c := d.c
	if c.werr != nil {
		return 0, c.werr
	}
	// The deadline is moved only when less than half of WriteTimeout is
	// left (a timer change per reply costs more than the check): every
	// write gets at least half of it.
	if now, t := time.Now(), c.s.cfg.WriteTimeout; c.wdl.Sub(now) < t/2 {
		c.wdl = now.Add(t)
		_ = c.nc.SetWriteDeadline(c.wdl)
	}
	n, err := c.nc.Write(p)
	c.st.bytesWritten.Add(int64(n))
	if err != nil {
		c.werr = err
	}
	return n, err
}

// shutdown closes the connection if it waits for a command; otherwise it
// ends after the command it runs.
func (c *conn) shutdown() {
	c.stopping.Store(true)
	c.mu.Lock()
	busy := c.busy
	c.mu.Unlock()
	if !busy {
		_ = c.nc.SetReadDeadline(time.Now())
	}
}

func (c *conn) setBusy(b bool) {
	c.mu.Lock()
	c.busy = b
	c.mu.Unlock()
}

// errClose ends a connection after its reply is flushed.
var errClose = errors.New("close the connection")

// serve runs the connection's commands until it ends; the caller closes
// the socket.
func (c *conn) serve() {
	defer func() {
		if c.r != nil {
			c.park()
		}
		c.unmark()
	}()
	for !c.stopping.Load() {
		if c.r.Buffered() == 0 {
			if err := c.flush(); err != nil {
				return
			}
			if !c.waitCommand() {
				return
			}
			// A command has begun: the rest of it (and of any commands
			// pipelined behind it) may take ReadTimeout, or else as
			// long as the idle timeout allows.
			t := c.s.cfg.ReadTimeout
			if t == 0 {
				t = c.s.cfg.IdleTimeout
			}
			if t > 0 {
				_ = c.nc.SetReadDeadline(time.Now().Add(t))
				c.cmdDeadline = true
			}
		}
		if !c.step() {
			return
		}
	}
	_ = c.flush()
}

// step reads and runs the next command, binary or text, and reports
// whether the connection goes on.
func (c *conn) step() bool {
	if b, err := c.r.Peek(1); err == nil && b[0] == binReqMagic {
		return c.run(c.binary)
	}
	line, err := c.readLine()
	if err != nil {
		if errors.Is(err, errLineTooLong) {
			c.reply(errLineTooLong.line)
			_ = c.flush()
		}
		return false
	}
	return c.run(func() error { return c.command(line) })
}

// run runs one command marked busy (for shutdown) and reports whether the
// connection goes on: not after an error, a failed write to the socket,
// or quit (whose reply is flushed first). The command's duration goes to
// the latency histogram its dispatch named (c.op).
func (c *conn) run(cmd func() error) bool {
	if c.lp == nil {
		c.setBusy(true)
	}
	start := time.Now()
	err := cmd()
	if c.lp == nil {
		c.setBusy(false)
	} else if c.ls.src.short {
		// Not a whole command yet (loop.go): it runs again when the
		// rest has come.
		c.op = mopOther
		return false
	}
	c.lat.observe(c.op, time.Since(start))
	c.op = mopOther
	if err == nil {
		err = c.werr
	}
	if errors.Is(err, errClose) {
		_ = c.flush()
	}
	return err == nil
}

func (c *conn) flush() error {
	if c.w.Buffered() == 0 {
		return c.werr
	}
	return c.w.Flush()
}

// readLine returns the next line without its "\n" or "\r\n" (memcached
// accepts both). It aliases the reader's buffer or c.line until the next
// read. A line longer than maxLine is errLineTooLong.
func (c *conn) readLine() ([]byte, error) {
	b, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		c.line = append(c.line[:0], b...)
		for err == bufio.ErrBufferFull {
			if len(c.line) > maxLine {
				return nil, errLineTooLong
			}
			b, err = c.r.ReadSlice('\n')
			c.line = append(c.line, b...)
		}
		b = c.line
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxLine {
		return nil, errLineTooLong
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b, nil
}

// readData reads a storage command's n-byte data block and its CRLF.
func (c *conn) readData(n int) ([]byte, error) {
	if cap(c.data) < n+2 {
		c.data = make([]byte, n+2)
	}
	d := c.data[:n+2]
	c.need(n + 2)
	if _, err := io.ReadFull(c.r, d); err != nil {
		return nil, err
	}
	if d[n] != '\r' || d[n+1] != '\n' {
		return nil, errBadDataChunk
	}
	// A large block's buffer is not kept for an idle connection.
	if cap(c.data) > 64<<10 {
		defer func() { c.data = nil }()
	}
	return d[:n], nil
}

// swallow reads and drops n bytes (a refused data block).
func (c *conn) swallow(n int64) error {
	if c.lp != nil {
		// An event loop does not wait for the block (loop.go): what has
		// come is dropped now, the rest as it comes.
		m := min(n, int64(c.r.Buffered()+c.ls.src.left()))
		_, _ = c.r.Discard(int(m))
		c.ls.skip = n - m
		return nil
	}
	_, err := io.CopyN(io.Discard, c.r, n)
	return err
}

func (c *conn) reply(line string) {
	_, _ = c.w.WriteString(line)
	_, _ = c.w.WriteString("\r\n")
}

// command parses and runs one command line. An error ends the connection.
func (c *conn) command(line []byte) error {
	// memcached reads a command line as a C string: a NUL ends it.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	if isMeta(line) {
		c.setOp(metaOp(line[1]))
		return c.meta(line)
	}
	cmd, toks, err := parseText(line, c.toks, c.s.cfg.MaxItemSize)
	c.toks = toks[:0]
	if err != nil {
		return c.protoError(err, cmd.noreply)
	}
	c.setOp(textOp(cmd.kind))
	if cmd.key != nil {
		// The key aliases the reader's buffer, which reading a data
		// block may refill: keep a copy (or the normalized key) first.
		if c.s.cfg.Normalizer == nil {
			c.key = append(c.key[:0], cmd.key...)
		} else if c.key, err = c.s.storeKey(c.key, cmd.key); err != nil {
			if cmd.kind >= cmdSet && cmd.kind <= cmdCas {
				if err := c.swallow(int64(cmd.bytes) + 2); err != nil {
					return err
				}
			}
			c.replyTo(&cmd, keyError(err))
			return nil
		}
		cmd.key = c.key
	}
	switch cmd.kind {
	case cmdSet, cmdAdd, cmdReplace, cmdAppend, cmdPrepend, cmdCas:
		data, err := c.readData(cmd.bytes)
		if err != nil {
			if errors.Is(err, errBadDataChunk) {
				// memcached answers and goes on reading commands.
				c.reply(errBadDataChunk.line)
				return nil
			}
			return err
		}
		c.store(&cmd, data)
	case cmdGet, cmdGets, cmdGat, cmdGats:
		c.retrieve(&cmd)
	case cmdTouch:
		c.touch(&cmd)
	case cmdDelete:
		c.delete(&cmd)
	case cmdIncr, cmdDecr:
		c.arith(&cmd)
	case cmdVersion:
		c.reply("VERSION " + c.s.cfg.Version)
	case cmdVerbosity:
		if !cmd.noreply {
			c.reply("OK")
		}
	case cmdQuit:
		return errClose
	case cmdFlushAll:
		if err := c.s.flushAll(cmd.exptime); err != nil {
			c.replyErr(&cmd, err)
		} else {
			c.replyTo(&cmd, "OK")
		}
	case cmdStats:
		c.stats(&cmd)
	}
	return nil
}

// protoError answers a command that could not be parsed: its data block
// (if any) is read and dropped, and the error line is sent unless quiet
// (noreply; a line too long is answered anyway, and ends the
// connection). An error that is no protocol error ends the connection.
func (c *conn) protoError(err error, quiet bool) error {
	var pe *protoError
	if !errors.As(err, &pe) {
		return err
	}
	if pe.swallow > 0 {
		if err := c.swallow(pe.swallow); err != nil {
			return err
		}
	}
	if !quiet || pe == errLineTooLong {
		c.reply(pe.line)
	}
	if pe == errLineTooLong {
		return errClose
	}
	return nil
}

// replyTo writes line unless the command said noreply.
func (c *conn) replyTo(cmd *textCmd, line string) {
	if !cmd.noreply {
		c.reply(line)
	}
}

// replyErr answers an engine error as memcached answers a server failure.
func (c *conn) replyErr(cmd *textCmd, err error) {
	c.s.log.Warn("marlin serve: command failed", "err", err)
	c.reply("SERVER_ERROR " + oneLine(err.Error()))
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, []byte(s)))
}
