package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBehindNutcracker: two servers behind nutcracker (twemproxy, ketama):
// 100,000 keys set through the proxy read back through it, and each is on
// exactly one backend. docs/server.md gives the configuration.
func TestBehindNutcracker(t *testing.T) {
	bin, err := exec.LookPath("nutcracker")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nutcracker"); serr == nil {
			bin, err = "/usr/sbin/nutcracker", nil // Debian's, off a user's PATH
		}
	}
	if err != nil {
		if os.Getenv("MARLIN_NO_MEMCACHED") == "1" {
			t.Skip("MARLIN_NO_MEMCACHED=1: no nutcracker on this machine")
		}
		t.Fatalf("nutcracker is needed (apt-get install nutcracker; MARLIN_NO_MEMCACHED=1 to skip): %v", err)
	}
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	a, _, _ := startServer(t, "", Config{})
	b, _, _ := startServer(t, "", Config{})
	port := freePort(t)
	statsPort := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nutcracker.yml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`marlin:
  listen: 127.0.0.1:%d
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  timeout: 5000
  servers:
   - %s:1 a
   - %s:1 b
`, port, a, b)), 0o644))
	cmd := exec.Command(bin, "-c", conf, "-s", fmt.Sprint(statsPort), "-a", "127.0.0.1",
		"-o", filepath.Join(dir, "nutcracker.log"), "-p", filepath.Join(dir, "pid"))
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	proxy := fmt.Sprintf("127.0.0.1:%d", port)
	pc := dialRetry(t, proxy)
	defer pc.Close()

	key := func(i int) string { return fmt.Sprintf("user:%d", i) }
	// Pipelined sets through the proxy, 500 at a time.
	r := bufio.NewReader(pc)
	for lo := 0; lo < n; lo += 500 {
		var sb strings.Builder
		for i := lo; i < min(lo+500, n); i++ {
			v := fmt.Sprint(i)
			fmt.Fprintf(&sb, "set %s %d 0 %d\r\n%s\r\n", key(i), i%7, len(v), v)
		}
		_, err := io.WriteString(pc, sb.String())
		require.NoError(t, err)
		for i := lo; i < min(lo+500, n); i++ {
			l, err := r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "STORED\r\n", l, "set %s", key(i))
		}
	}
	// Read back through the proxy, and from each backend directly.
	found := map[string]int{}
	onBackend := map[string]int{}
	for _, addr := range []string{proxy, a, b} {
		c := pc
		if addr != proxy {
			c = dialRetry(t, addr)
			defer c.Close()
		}
		cr := bufio.NewReader(c)
		for lo := 0; lo < n; lo += 100 {
			var sb strings.Builder
			sb.WriteString("get")
			for i := lo; i < min(lo+100, n); i++ {
				sb.WriteString(" " + key(i))
			}
			sb.WriteString("\r\n")
			_, err := io.WriteString(c, sb.String())
			require.NoError(t, err)
			for {
				l, err := cr.ReadString('\n')
				require.NoError(t, err)
				if l == "END\r\n" {
					break
				}
				var k string
				var flags, size int
				_, err = fmt.Sscanf(l, "VALUE %s %d %d", &k, &flags, &size)
				require.NoError(t, err, "%q", l)
				data := make([]byte, size+2)
				_, err = io.ReadFull(cr, data)
				require.NoError(t, err)
				var i int
				_, err = fmt.Sscanf(k, "user:%d", &i)
				require.NoError(t, err)
				require.Equal(t, fmt.Sprint(i), string(data[:size]))
				require.Equal(t, i%7, flags)
				if addr == proxy {
					found[k] += 100 // seen through the proxy
				} else {
					found[k]++
					onBackend[addr]++
				}
			}
		}
	}
	require.Len(t, found, n)
	perBackend := 0
	for k, v := range found {
		require.Equal(t, 101, v, "%s: through the proxy once and on exactly one backend", k)
		perBackend++
	}
	require.Equal(t, n, perBackend)
	// ketama spreads the keys over both (equal weights).
	require.Greater(t, onBackend[a], n/4)
	require.Greater(t, onBackend[b], n/4)
	require.Equal(t, n, onBackend[a]+onBackend[b])
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func dialRetry(t *testing.T, addr string) net.Conn {
	t.Helper()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c
		}
		require.Less(t, i, 100, "%s: %v", addr, err)
		time.Sleep(20 * time.Millisecond)
	}
}
