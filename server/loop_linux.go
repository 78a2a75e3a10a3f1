package server

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event loops (IOLoop). A goroutine per connection costs, per command, a
// read that finds nothing, a park and a wakeup through the runtime's
// netpoller: under memcaslap a quarter of the server's time. A loop owns
// an epoll instance (level-triggered) and the connections assigned to it;
// per readiness event it reads the socket once, runs every whole command
// the bytes hold and writes the replies once. Between events a
// connection holds no goroutine and no buffers (only the start of a
// command not yet whole, or replies the socket did not take).
//
// The loop's role passes between goroutines. If more than maxPendingOut
// bytes of one command's replies cannot be written without waiting (the
// client does not read, or reads slower than a large multi-get comes),
// the goroutine serving it hands the loop to a new goroutine (handoff)
// and goes on serving that one connection alone, waiting as long as
// WriteTimeout allows; then it gives the connection back to the loop and
// ends. So one client that does not read never holds up another.
//
// Invariants:
//   - A connection is served by one goroutine at a time: its loop's
//     owner, or the goroutine that detached it (ls.detached, under
//     loop.mu; a detached connection's epoll interest is empty).
//   - A connection whose pendOut is not empty runs no command and is
//     watched for writability only, so what it buffers is bounded by one
//     command's replies (handoff bounds those to maxPendingOut).
//   - pendIn holds what was read and not yet run: one command not yet
//     whole (a line of at most maxLine bytes, or a line and a data block
//     of at most MaxItemSize), or, behind replies not taken, the rest of
//     one read (nothing more is read until the replies are taken).

// maxPendingOut is how many reply bytes a connection may leave unwritten
// before the loop is handed off (the whole reply is then written by the
// connection's own goroutine).
const maxPendingOut = 256 << 10

// loopReadSize is the read buffer of a loop: the most read per event.
const loopReadSize = 64 << 10

type loop struct {
	s    *Server
	epfd int
	// ep is epfd as a file of the runtime's poller: the owner waits for
	// events by parking on it (rc.Read), as any network goroutine waits,
	// rather than blocking a thread in epoll_wait, which the scheduler
	// would take its processor from; a read deadline wakes the owner for
	// the timeouts and Shutdown.
	ep   *os.File
	rc   syscall.RawConn
	tick time.Duration

	// mu guards conns, closing, active and every conn's ls.detached.
	// The owner takes it to find an event's connection, which orders its
	// work on a connection after what a detached goroutine did to it.
	mu      sync.Mutex
	conns   map[int32]*conn
	closing bool
	active  int // goroutines serving: the owner and detached ones

	lat *latencyShard // its connections' latency histograms (metrics.go)
	st  stats         // its connections' counters (Server.totals)

	// held counts the connections holding bytes (pendIn, pendOut or a
	// block to skip); the others wait for a command without buffers.
	held atomic.Int64
}

// idle is how many of l's connections wait for a command holding nothing.
func (l *loop) idle() int64 {
	l.mu.Lock()
	n := int64(len(l.conns))
	l.mu.Unlock()
	return max(n-l.held.Load(), 0)
}

// hold updates l.held after c's pending bytes may have changed.
func (l *loop) hold(c *conn) {
	ls := &c.ls
	h := !ls.closed && (len(ls.pendIn) > 0 || len(ls.pendOut) > 0 || ls.skip > 0)
	if h != ls.holding {
		ls.holding = h
		if h {
			l.held.Add(1)
		} else {
			l.held.Add(-1)
		}
	}
}

// owner is the loop's role: its buffers go with the goroutine that holds
// it (and stay with a goroutine that hands the role off).
type owner struct {
	l      *loop
	events []unix.EpollEvent
	rbuf   []byte
	r      *bufio.Reader
	w      *bufio.Writer
	gone   bool // handed off: finish the connection being served, then end
	scanAt int64
	n      int                // events ready (ready's result)
	ready  func(uintptr) bool // fetches ready events; made once (a closure per wait would be an allocation)
}

// newLoops starts n loops.
func newLoops(s *Server, n int) ([]*loop, error) {
	tick := time.Second
	for _, t := range []time.Duration{s.cfg.IdleTimeout, s.cfg.ReadTimeout, s.cfg.WriteTimeout} {
		if t > 0 {
			tick = min(tick, max(t/4, 5*time.Millisecond))
		}
	}
	loops := make([]*loop, 0, n)
	for range n {
		l, err := newLoop(s, tick)
		if err != nil {
			for _, l := range loops {
				l.stop()
			}
			return nil, err
		}
		loops = append(loops, l)
	}
	return loops, nil
}

func newLoop(s *Server, tick time.Duration) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll") // non-blocking: the poller takes it
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	l := &loop{s: s, epfd: epfd, ep: ep, rc: rc, tick: tick, conns: map[int32]*conn{}, active: 1,
		lat: s.metrics.newShard()}
	s.wg.Add(1)
	go l.newOwner().run()
	return l, nil
}

func (l *loop) newOwner() *owner {
	o := &owner{l: l, events: make([]unix.EpollEvent, 128), rbuf: make([]byte, loopReadSize),
		r: bufio.NewReaderSize(nil, bufSize), w: bufio.NewWriterSize(nil, bufSize)}
	o.ready = func(uintptr) bool {
		o.n = epollNow(l.epfd, o.events)
		return o.n > 0
	}
	return o
}

// socketFD takes nc's socket away from the runtime: a duplicate of its
// descriptor, non-blocking, and nc closed.
func socketFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	nc.Close()
	return fd, nil
}

// add starts serving c (its fd set) from l. Under l.mu, so that a
// stopping loop either closes c with the rest or never takes it.
func (l *loop) add(c *conn) error {
	c.lp = l
	c.lat = l.lat
	c.st = &l.st
	c.ls.lastActive = nanotime()
	c.ls.lw.c = c
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return ErrServerClosed
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.ls.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.ls.fd)}); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.conns[int32(c.ls.fd)] = c
	return nil
}

// stop makes the loop close its connections (each after the commands it
// has whole) and end.
func (l *loop) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
	_ = l.ep.SetReadDeadline(time.Unix(1, 0)) // wakes the owner
}

// wakeAt sets when the owner wakes without events (not once stopped: a
// stopping loop's owner is woken now).
func (l *loop) wakeAt(t int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closing {
		_ = l.ep.SetReadDeadline(processStart.Add(time.Duration(t)))
	}
}

// abort wakes the detached connections' goroutines by shutting their
// sockets (Shutdown's deadline passed).
func (l *loop) abort() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if c.ls.detached {
			_ = unix.Shutdown(c.ls.fd, unix.SHUT_RDWR)
		}
	}
}

// exit ends a goroutine's service of the loop; the last one out of a
// stopped loop closes its descriptors.
func (l *loop) exit() {
	l.mu.Lock()
	l.active--
	last := l.active == 0
	l.mu.Unlock()
	if last {
		l.ep.Close()
	}
	l.s.wg.Done()
}

func (o *owner) run() {
	l := o.l
	defer l.exit()
	for {
		if now := nanotime(); now >= o.scanAt {
			l.expire(now)
			o.scanAt = now + int64(l.tick)
			l.wakeAt(o.scanAt)
		}
		l.mu.Lock()
		closing := l.closing
		l.mu.Unlock()
		if closing {
			o.closeAll()
			return
		}
		o.n = 0
		err := l.rc.Read(o.ready)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.s.log.Error("marlin serve: waiting for events", "err", err)
			l.stop()
		}
		for i := range o.n {
			fd := o.events[i].Fd
			l.mu.Lock()
			c := l.conns[fd]
			if c != nil && c.ls.detached {
				c = nil
			}
			l.mu.Unlock()
			if c == nil {
				continue
			}
			o.serve(c)
			if o.gone {
				l.reattach(c)
				return
			}
		}
	}
}

// epollNow returns the events ready now, without waiting (0 if none).
func epollNow(epfd int, events []unix.EpollEvent) int {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0
		}
		return int(n)
	}
}

// serve handles a readiness event of c: replies to write, or bytes to
// read (or an error or hang-up, which the read or write then reports).
func (o *owner) serve(c *conn) {
	ls := &c.ls
	defer o.l.hold(c)
	if len(ls.pendOut) > 0 {
		if !o.drain(c) {
			o.l.closeConn(c)
			return
		}
		if len(ls.pendOut) > 0 {
			return
		}
		// Drained: run what came meanwhile, then read again.
		o.commands(c, nil)
		if !o.gone && !ls.closed && len(ls.pendOut) == 0 {
			o.l.watch(c, unix.EPOLLIN)
		}
		return
	}
	n, err := readFD(ls.fd, o.rbuf)
	if err == unix.EAGAIN {
		return
	}
	if n <= 0 {
		// The client closed (or reset) the connection: what it sent
		// whole has been answered.
		o.l.closeConn(c)
		return
	}
	c.st.bytesRead.Add(int64(n))
	o.commands(c, o.rbuf[:n])
	if !o.gone && !ls.closed && len(ls.pendOut) > 0 {
		o.l.watch(c, unix.EPOLLOUT)
	}
}

// commands runs every whole command of c's input (pendIn, then in) and
// keeps the rest; it flushes the replies.
func (o *owner) commands(c *conn, in []byte) {
	ls := &c.ls
	now := nanotime()
	ls.lastActive = now
	if ls.skip > 0 {
		m := min(ls.skip, int64(len(in)))
		in, ls.skip = in[m:], ls.skip-m
		if ls.skip > 0 || len(in) == 0 {
			if ls.skip == 0 {
				ls.inSince = 0
			}
			return
		}
	}
	if len(ls.pendIn) > 0 {
		waiting := len(ls.pendIn)+len(in) < ls.needAt ||
			ls.lineAt > 0 && len(ls.pendIn)+len(in) <= maxLine+1 && bytes.IndexByte(in, '\n') < 0
		ls.pendIn = append(ls.pendIn, in...)
		if waiting {
			return
		}
		in = ls.pendIn
	}
	ls.src = loopSource{b: in}
	ls.owner = o
	o.r.Reset(&ls.src)
	o.w.Reset(&ls.lw)
	c.r, c.w = o.r, o.w
	ok, start := true, 0
	for {
		if ls.skip > 0 {
			m := min(ls.skip, int64(o.r.Buffered()+ls.src.left()))
			_, _ = o.r.Discard(int(m))
			ls.skip -= m
		}
		start = ls.src.pos - o.r.Buffered()
		if start == len(in) || len(ls.pendOut) > 0 || c.werr != nil {
			break
		}
		ls.src.short, ls.needAt = false, 0
		if ok = c.step(); !ok {
			break
		}
	}
	incomplete := !ok && ls.src.short && c.werr == nil
	ls.lineAt = 0
	switch rest := in[start:]; {
	case !ok && !incomplete:
	case len(rest) > 0:
		// Kept: a command not yet whole, or whole ones behind replies
		// the socket did not take.
		if !incomplete {
			ls.needAt = 0
		} else if ls.needAt -= start; ls.needAt <= 0 {
			ls.needAt, ls.lineAt = 0, len(rest)
		}
		if len(ls.pendIn) > 0 && &rest[0] == &ls.pendIn[start] {
			ls.pendIn = ls.pendIn[:copy(ls.pendIn, rest)]
		} else {
			ls.pendIn = append(ls.pendIn[:0], rest...)
		}
		if ls.inSince == 0 {
			ls.inSince = now
		}
	default:
		if cap(ls.pendIn) > bufSize {
			ls.pendIn = nil
		}
		ls.pendIn = ls.pendIn[:0]
		ls.inSince = 0
		if ls.skip > 0 {
			ls.inSince = now
		}
	}
	_ = o.w.Flush()
	o.w.Reset(nil)
	o.r.Reset(nil)
	ls.src = loopSource{}
	c.r, c.w = nil, nil
	if cap(c.data) > bufSize {
		c.data = nil // a waiting connection keeps no data block
	}
	if ok = ok || incomplete; !ok || c.werr != nil {
		o.l.closeConn(c)
	}
}

// drain writes what it can of c's pendOut; false: the socket failed.
func (o *owner) drain(c *conn) bool {
	if err := c.writePending(); err != nil {
		c.werr = err
		return false
	}
	return true
}

// writePending writes what the socket takes now of c's pendOut; once all
// is written, c no longer waits for the socket.
func (c *conn) writePending() error {
	ls := &c.ls
	n, err := writeFD(ls.fd, ls.pendOut)
	c.st.bytesWritten.Add(int64(n))
	if err != nil {
		return err
	}
	if ls.pendOut = ls.pendOut[n:]; len(ls.pendOut) == 0 {
		ls.pendOut, ls.outSince = nil, 0
		ls.lastActive = nanotime()
	}
	return nil
}

// loopWriter is what a loop's buffered writer writes a connection's
// replies to: the socket, as far as it takes them, then pendOut.
type loopWriter struct{ c *conn }

func (w *loopWriter) Write(p []byte) (int, error) {
	c := w.c
	ls := &c.ls
	if c.werr != nil {
		return 0, c.werr
	}
	total := len(p)
	if len(ls.pendOut) == 0 {
		n, err := writeFD(ls.fd, p)
		c.st.bytesWritten.Add(int64(n))
		if err != nil {
			c.werr = err
			return n, err
		}
		if n == len(p) {
			return n, nil
		}
		p = p[n:]
		ls.outSince = nanotime()
	}
	ls.pendOut = append(ls.pendOut, p...)
	if len(ls.pendOut) > maxPendingOut && !ls.detached {
		c.lp.handoff(c)
	}
	if ls.detached {
		if err := c.drainWaiting(); err != nil {
			c.werr = err
			return 0, err
		}
	}
	return total, nil
}

// handoff gives the loop to a new goroutine; the calling one goes on
// serving c alone (its writes wait), then gives c back (reattach).
func (l *loop) handoff(c *conn) {
	l.mu.Lock()
	c.ls.detached = true
	l.active++
	l.mu.Unlock()
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.ls.fd, &unix.EpollEvent{Fd: int32(c.ls.fd)}) // no interest: the owner leaves c alone
	c.ls.owner.gone = true
	l.s.wg.Add(1)
	go l.newOwner().run()
}

// reattach gives a detached connection back to its loop (or closes it if
// the loop stops). The caller does not touch c afterwards: its interest
// is set last, and until then no event of c reaches the owner.
func (l *loop) reattach(c *conn) {
	if c.ls.closed {
		return
	}
	l.mu.Lock()
	closing := l.closing
	if !closing {
		c.ls.detached = false
	}
	l.mu.Unlock()
	if closing {
		l.closeConn(c)
		return
	}
	l.watch(c, unix.EPOLLIN)
}

// drainWaiting writes all of a detached connection's pendOut, waiting for
// the socket until WriteTimeout after the replies began to wait.
func (c *conn) drainWaiting() error {
	ls := &c.ls
	deadline := ls.outSince + int64(c.s.cfg.WriteTimeout)
	for {
		if err := c.writePending(); err != nil || len(ls.pendOut) == 0 {
			return err
		}
		wait := time.Duration(deadline - nanotime())
		if wait <= 0 {
			return os.ErrDeadlineExceeded
		}
		fds := []unix.PollFd{{Fd: int32(ls.fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(fds, int((wait+time.Millisecond-1)/time.Millisecond)); err != nil && err != unix.EINTR {
			return os.NewSyscallError("poll", err)
		}
	}
}

func (l *loop) watch(c *conn, events uint32) {
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.ls.fd, &unix.EpollEvent{Events: events, Fd: int32(c.ls.fd)}); err != nil {
		c.werr = os.NewSyscallError("epoll_ctl", err)
		l.closeConn(c)
	}
}

// closeConn ends c: untracked first (a client that sees the close never
// counts itself in curr_connections), then closed, which also takes it
// out of the epoll set.
func (l *loop) closeConn(c *conn) {
	if c.ls.closed {
		return
	}
	c.ls.closed = true
	l.hold(c)
	l.mu.Lock()
	delete(l.conns, int32(c.ls.fd))
	l.mu.Unlock()
	l.s.untrack(c)
	unix.Close(c.ls.fd)
	c.ls.pendIn, c.ls.pendOut = nil, nil
}

// closeAll closes the loop's connections at Shutdown, each after a last
// try to write its replies; detached ones close themselves.
func (o *owner) closeAll() {
	l := o.l
	l.mu.Lock()
	var cs []*conn
	for _, c := range l.conns {
		if !c.ls.detached {
			cs = append(cs, c)
		}
	}
	l.mu.Unlock()
	for _, c := range cs {
		if len(c.ls.pendOut) > 0 {
			o.drain(c)
		}
		l.closeConn(c)
	}
}

// expire closes the connections past a timeout: IdleTimeout with nothing
// begun, ReadTimeout (else IdleTimeout) with a command begun and not
// whole, WriteTimeout with replies not taken.
func (l *loop) expire(now int64) {
	cfg := &l.s.cfg
	rt := cfg.ReadTimeout
	if rt == 0 {
		rt = cfg.IdleTimeout
	}
	var cs []*conn
	l.mu.Lock()
	for _, c := range l.conns {
		ls := &c.ls
		switch {
		case ls.detached:
		case len(ls.pendOut) > 0:
			if cfg.WriteTimeout > 0 && now-ls.outSince >= int64(cfg.WriteTimeout) {
				cs = append(cs, c)
			}
		case len(ls.pendIn) > 0 || ls.skip > 0:
			if rt > 0 && now-ls.inSince >= int64(rt) {
				cs = append(cs, c)
			}
		case cfg.IdleTimeout > 0 && now-ls.lastActive >= int64(cfg.IdleTimeout):
			cs = append(cs, c)
		}
	}
	l.mu.Unlock()
	for _, c := range cs {
		l.closeConn(c)
	}
}

// readFD and writeFD are read and write of a non-blocking socket: they
// never block, so they skip the scheduler's system-call bookkeeping.
func readFD(fd int, p []byte) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(n), nil
	}
}

// writeFD writes as much of p as the socket takes now.
func writeFD(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
		switch e {
		case 0:
			done += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return done, nil
		default:
			return done, e
		}
	}
	return done, nil
}
