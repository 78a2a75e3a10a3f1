package server

import (
	"bufio"
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
	addr, _, _ := startServer(t, "", Config{MaxConns: 8, WriteTimeout: 500 * time.Millisecond})
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
		addr, _, _ := startServer(t, "", Config{MaxConns: 8})
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
