package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHostileClients: bad input costs the client its connection at worst,
// never the server's memory or another client's service.
func TestHostileClients(t *testing.T) {
	forEachIO(t, testHostileClients)
}

func testHostileClients(t *testing.T, m IOMode) {
	addr, _, _ := startServer(t, "", Config{IO: m, MaxConns: 8, WriteTimeout: 500 * time.Millisecond})
	alive := func() {
		t.Helper()
		require.Equal(t, "VERSION 1.6.18\r\n", exchange(t, addr, "version\r\n"))
	}

	t.Run("endless line", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		go func() { _, _ = c.Write([]byte(strings.Repeat("a", 4<<20))) }()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c) // the server answers, then closes
		require.Equal(t, "CLIENT_ERROR line too long\r\n", string(got))
		alive()
	})

	t.Run("value length 2^40", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = io.WriteString(c, "set k 0 0 1099511627776\r\n"+strings.Repeat("z", 1<<20))
		require.NoError(t, err)
		alive() // the swallowing connection holds no large buffer
		c.Close()
		require.Equal(t, "END\r\n", exchange(t, addr, "get k\r\n"))
	})

	t.Run("disconnect mid-value", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = io.WriteString(c, "set half 0 0 100\r\n"+strings.Repeat("h", 50))
		require.NoError(t, err)
		c.Close()
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, "END\r\n", exchange(t, addr, "get half\r\n"), "nothing half-stored")
	})

	t.Run("pipelined gets never read", func(t *testing.T) {
		require.Equal(t, "STORED\r\n", exchange(t, addr, "set big 0 0 4096\r\n"+strings.Repeat("b", 4096)+"\r\n"))
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			line := []byte("get big\r\n")
			batch := []byte(strings.Repeat(string(line), 10_000))
			for range 100 { // a million gets
				if _, err := c.Write(batch); err != nil {
					return // the server closed the connection
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the writer of a million gets was never cut off")
		}
		alive()
	})

	t.Run("binary body over the limit", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		h := binRequest(opSet, []byte("k"), be32(0, 0), nil, 0)
		h[8], h[9], h[10], h[11] = 0x40, 0, 0, 0 // 1 GiB body
		_, err = c.Write(h)
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		require.Empty(t, got, "closed without an answer")
		alive()
	})

	t.Run("connection limit", func(t *testing.T) {
		addr, _, _ := startServer(t, "", Config{IO: m, MaxConns: 8})
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for range 8 {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			_, err = io.WriteString(c, "version\r\n")
			require.NoError(t, err)
			l, err := bufio.NewReader(c).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "VERSION 1.6.18\r\n", l)
			held = append(held, c)
		}
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		require.Equal(t, "SERVER_ERROR too many open connections\r\n", string(got))
	})
}

// TestIdleConnectionsParkBuffers: connections idle longer than idleGrace
// give their buffers back (counted in stats), and each goes on working
// when its client speaks again, pipelined or not; a client's partial
// command is no idle wait.
func TestIdleConnectionsParkBuffers(t *testing.T) {
	forEachIO(t, testIdleConnections)
}

func testIdleConnections(t *testing.T, m IOMode) {
	addr, s, _ := startServer(t, "", Config{IO: m})
	const n = 200
	conns := make([]net.Conn, n)
	rds := make([]*bufio.Reader, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		conns[i], rds[i] = c, bufio.NewReader(c)
		_, err = fmt.Fprintf(c, "set k%d 0 0 1\r\n%d\r\n", i, i%10)
		require.NoError(t, err)
		line, err := rds[i].ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "STORED\r\n", line)
	}
	// One client stops in the middle of a data block.
	_, err := io.WriteString(conns[0], "set half 0 0 4\r\nab")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.idleConnections() == n-1 }, 10*time.Second, 50*time.Millisecond)
	// An event loop's connection holds nothing between commands: the
	// one asking counts too.
	asking := map[IOMode]int{IOLoop: 1, IOGoroutine: 0}[m]
	require.Contains(t, exchange(t, addr, "stats\r\n"), fmt.Sprintf("STAT marlin_idle_connections %d\r\n", n-1+asking))
	_, err = io.WriteString(conns[0], "cd\r\n")
	require.NoError(t, err)
	line, err := rds[0].ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "STORED\r\n", line)
	for i := 1; i < n; i++ {
		_, err := fmt.Fprintf(conns[i], "get k%d\r\nget k%d\r\n", i, i)
		require.NoError(t, err)
		want := fmt.Sprintf("VALUE k%d 0 1\r\n%d\r\nEND\r\n", i, i%10)
		got := make([]byte, 2*len(want))
		_, err = io.ReadFull(rds[i], got)
		require.NoError(t, err)
		require.Equal(t, want+want, string(got))
	}
	require.Equal(t, "VALUE half 0 4\r\nabcd\r\nEND\r\n", exchange(t, addr, "get half\r\n"))
}

// TestClosedConnectionUntracked: once a client has seen the server close
// its connection (quit), the connection is no longer counted: the next
// stats shows only the asking one. (The count used to drop only after
// the socket closed, so a quick stats could count the previous one.)
func TestClosedConnectionUntracked(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{})
	for range 100 {
		require.Equal(t, "", exchange(t, addr, "quit\r\n"))
		require.Contains(t, exchange(t, addr, "stats\r\n"), "STAT curr_connections 1\r\n")
	}
}

// TestReadTimeout: a client that begins a command and stops sending is
// cut off after ReadTimeout, and nothing of the half-sent item is stored;
// a connection that only waits between commands is not.
func TestReadTimeout(t *testing.T) {
	forEachIO(t, testReadTimeout)
}

func testReadTimeout(t *testing.T, m IOMode) {
	addr, _, _ := startServer(t, "", Config{IO: m, ReadTimeout: 300 * time.Millisecond})
	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer slow.Close()
	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	_, err = io.WriteString(slow, "set k 0 0 10\r\nabc")
	require.NoError(t, err)
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := slow.Read(make([]byte, 10))
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF, "the server closes the stalled connection")
	time.Sleep(200 * time.Millisecond) // the idle one has waited past ReadTimeout
	_, err = io.WriteString(idle, "get k\r\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(idle).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "END\r\n", line)
}
