package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// forEachIO runs f once per way of serving connections.
func forEachIO(t *testing.T, f func(t *testing.T, io IOMode)) {
	for _, m := range []IOMode{IOLoop, IOGoroutine} {
		t.Run(string(m), func(t *testing.T) { f(t, m) })
	}
}

// splitScript mixes text, meta and binary commands, with data blocks, a
// refused block to swallow and a protocol error. Its replies do not
// depend on how often it has run.
func splitScript() string {
	return "set a 0 0 5\r\nhello\r\nget a\r\nmg a v f\r\n" +
		string(binRequest(opGetK, []byte("fixed"), nil, nil, 0)) +
		"ms b 3 T0\r\nxyz\r\nmg b v\r\nset big 0 0 2000000 noreply\r\n" + strings.Repeat("z", 2000000) + "\r\n" +
		"bogus\r\n" + string(binRequest(opNoop, nil, nil, nil, 0)) + "delete nothing\r\nversion\r\n"
}

// TestLoopSplitCommands: a command split anywhere between reads (and a
// client sending a byte at a time) gets the same replies as one sent
// whole.
func TestLoopSplitCommands(t *testing.T) {
	forEachIO(t, func(t *testing.T, m IOMode) {
		addr, _, _ := startServer(t, "", Config{IO: m, MaxItemSize: 1 << 20})
		require.Equal(t, "STORED\r\n", exchange(t, addr, "set fixed 7 0 3\r\nfix\r\n"))
		script := splitScript()
		want := exchange(t, addr, script)
		require.Contains(t, want, "VA 3\r\nxyz\r\nERROR\r\n") // noreply: the refusal is not answered
		require.True(t, strings.HasSuffix(want, "NOT_FOUND\r\nVERSION 1.6.18\r\n"), "%q", want)

		send := func(parts ...string) string {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			for i, p := range parts {
				if i > 0 {
					time.Sleep(time.Millisecond) // let the server read the part
				}
				_, err := io.WriteString(c, p)
				require.NoError(t, err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			require.NoError(t, err)
			return string(got)
		}
		// Every split point outside the big block, and a few inside it.
		head := strings.Index(script, "zzzz")
		tail := strings.LastIndex(script, "zzzz") + 4
		for k := 1; k < len(script); k++ {
			if k == head+10 {
				k = tail - 10
			}
			require.Equal(t, want, send(script[:k], script[k:]), "split at %d", k)
		}
		for _, k := range []int{head + 1, head + 65536, head + 1000000} {
			require.Equal(t, want, send(script[:k], script[k:]), "split at %d", k)
		}
		short := "set s 0 0 3\r\nabc\r\nget s\r\nmn\r\n" + string(binRequest(opNoop, nil, nil, nil, 0))
		parts := strings.Split(short, "")
		require.Equal(t, exchange(t, addr, short), send(parts...), "a byte at a time")
	})
}

// TestLoopSlowReaderHoldsUpNoOne: a client that asks for far more than
// the socket holds and does not read holds up no other client of its
// loop, and when it reads, it gets every byte.
func TestLoopSlowReaderHoldsUpNoOne(t *testing.T) {
	forEachIO(t, func(t *testing.T, m IOMode) {
		addr, s, _ := startServer(t, "", Config{IO: m, Loops: 1, WriteTimeout: 20 * time.Second})
		const nv, size = 8, 512 << 10
		var keys []string
		for i := range nv {
			v := strings.Repeat(string(rune('a'+i)), size)
			require.Equal(t, "STORED\r\n", exchange(t, addr, fmt.Sprintf("set v%d %d 0 %d\r\n%s\r\n", i, i, size, v)))
			keys = append(keys, fmt.Sprintf("v%d", i))
		}
		slow, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer slow.Close()
		// 16 MiB of replies to one command, and a second command behind.
		const rounds = 4
		all := strings.Repeat(" "+strings.Join(keys, " "), rounds)
		_, err = io.WriteString(slow, "get"+all+"\r\nget"+all+"\r\n")
		require.NoError(t, err)
		if m == IOLoop {
			// The replies do not pile up in the loop: a goroutine of
			// the connection's own waits to write them.
			require.Eventually(t, func() bool { return loopGoroutines(s) == 2 }, 5*time.Second, 10*time.Millisecond)
		}

		start := time.Now()
		for range 100 {
			require.Equal(t, "VERSION 1.6.18\r\n", exchange(t, addr, "version\r\n"))
		}
		require.Less(t, time.Since(start), 10*time.Second, "the others waited for the slow reader")

		r := bufio.NewReader(slow)
		_ = slow.SetReadDeadline(time.Now().Add(30 * time.Second))
		for range 2 {
			for range rounds {
				for i := range nv {
					line, err := r.ReadString('\n')
					require.NoError(t, err)
					require.Equal(t, fmt.Sprintf("VALUE v%d %d %d\r\n", i, i, size), line)
					data := make([]byte, size+2)
					_, err = io.ReadFull(r, data)
					require.NoError(t, err)
					require.Equal(t, strings.Repeat(string(rune('a'+i)), size)+"\r\n", string(data))
				}
			}
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "END\r\n", line)
		}
		// The connection goes on serving once it has caught up.
		_, err = io.WriteString(slow, "version\r\n")
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "VERSION 1.6.18\r\n", line)
	})
}

// TestLoopWriteTimeout: a client that never reads its replies is cut off
// after WriteTimeout, whether its replies wait in the loop or with a
// goroutine of their own, and is no longer counted.
func TestLoopWriteTimeout(t *testing.T) {
	addr, s, _ := startServer(t, "", Config{IO: IOLoop, Loops: 1, WriteTimeout: 300 * time.Millisecond})
	require.Equal(t, "STORED\r\n", exchange(t, addr, fmt.Sprintf("set v 0 0 %d\r\n%s\r\n", 100<<10, strings.Repeat("v", 100<<10))))
	// 20 MiB of replies, more than the socket buffers hold: 100 KiB per
	// get leaves less than maxPendingOut waiting in the loop; 1 MiB per
	// get more, which the connection's own goroutine waits to write.
	for _, req := range []string{strings.Repeat("get v\r\n", 200), strings.Repeat("get v v v v v v v v v v\r\n", 20)} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.(*net.TCPConn).SetReadBuffer(4096))
		_, err = io.WriteString(c, req)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return strings.Contains(exchange(t, addr, "stats\r\n"), "STAT curr_connections 1\r\n")
		}, 10*time.Second, 50*time.Millisecond, "the connection that does not read was not closed")
	}
	require.Contains(t, exchange(t, addr, "stats\r\n"), "STAT curr_connections 1\r\n")
	_ = s
}

// TestLoopShutdownWithSlowReader: Shutdown closes every connection of a
// loop, and one whose replies wait ends when Shutdown's deadline passes.
func TestLoopShutdownWithSlowReader(t *testing.T) {
	dir := t.TempDir()
	addr, s, db, done := openServer(t, dir, Config{IO: IOLoop, Loops: 1, WriteTimeout: time.Minute})
	defer db.Close()
	require.Equal(t, "STORED\r\n", exchange(t, addr, fmt.Sprintf("set v 0 0 %d\r\n%s\r\n", 1<<20, strings.Repeat("v", 1<<20))))
	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "get"+strings.Repeat(" v", 32)+"\r\n") // 32 MiB in one reply
	require.NoError(t, err)
	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	// The owner, and the slow reader's goroutine.
	require.Eventually(t, func() bool { return loopGoroutines(s) == 2 }, 5*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	require.ErrorIs(t, <-done, ErrServerClosed)
	stopped := make(chan struct{})
	go func() { s.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop's goroutines did not end")
	}
	require.Less(t, time.Since(start), 5*time.Second)
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := idle.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF, "the idle connection was closed")
}

// loopGoroutines is how many goroutines serve the first loop of s.
func loopGoroutines(s *Server) int {
	l := s.eventLoops()[0]
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}

// BenchmarkServeGetSet: memcaslap's mix (9 gets to 1 set of 100-byte
// items over 1,000 keys) from 8 connections, one request in flight each,
// under each IO mode. The client side allocates nothing per request, so
// allocs/op (-benchmem) are the server's.
func BenchmarkServeGetSet(b *testing.B) {
	for _, m := range []IOMode{IOLoop, IOGoroutine} {
		b.Run(string(m), func(b *testing.B) {
			addr, _, _ := startServer(b, "", Config{IO: m})
			const conns, keys = 8, 1000
			val := strings.Repeat("v", 100)
			setup, err := net.Dial("tcp", addr)
			require.NoError(b, err)
			var sb strings.Builder
			for k := range keys {
				fmt.Fprintf(&sb, "set key:%d 0 0 %d noreply\r\n%s\r\n", k, len(val), val)
			}
			sb.WriteString("mn\r\n")
			_, err = io.WriteString(setup, sb.String())
			require.NoError(b, err)
			line, err := bufio.NewReader(setup).ReadString('\n')
			require.NoError(b, err)
			require.Equal(b, "MN\r\n", line)
			setup.Close()

			reqs := make([][]byte, 10*keys)
			for i := range reqs {
				k := (i * 7919) % keys
				if i%10 == 9 {
					reqs[i] = fmt.Appendf(nil, "set key:%d 0 0 %d\r\n%s\r\n", k, len(val), val)
				} else {
					reqs[i] = fmt.Appendf(nil, "get key:%d\r\n", k)
				}
			}
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", addr)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					buf := make([]byte, 4096)
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						req := reqs[i%int64(len(reqs))]
						if _, err := c.Write(req); err != nil {
							errs <- err
							return
						}
						// A get's reply ends in "END\r\n", a set's is "STORED\r\n".
						want := []byte("END\r\n")
						if req[0] == 's' {
							want = []byte("STORED\r\n")
						}
						n := 0
						for n < len(want) || !bytes.HasSuffix(buf[:n], want) {
							m, err := c.Read(buf[n:])
							if err != nil {
								errs <- err
								return
							}
							n += m
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		})
	}
}
