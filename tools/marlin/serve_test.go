package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serveChildEnv, set in a child test process, makes TestServeChild run
// marlin serve with the arguments it holds (separated by spaces).
const serveChildEnv = "MARLIN_SERVE_CHILD"

// TestServeChild is the child of TestServeSurvivesKill: marlin serve in a
// process of its own, to be killed.
func TestServeChild(t *testing.T) {
	args := os.Getenv(serveChildEnv)
	if args == "" {
		t.Skip("run by TestServeSurvivesKill as its child")
	}
	os.Exit(run(append([]string{"serve"}, strings.Fields(args)...), os.Stdout, os.Stderr))
}

// startServeChild runs marlin serve on dir in a child process and returns
// its address once it accepts connections.
func startServeChild(t *testing.T, dir, sync string) (*exec.Cmd, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=--dir %s --listen %s --sync %s", serveChildEnv, dir, addr, sync))
	cmd.Stderr = io.Discard
	require.NoError(t, cmd.Start())
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return cmd, addr
		}
		require.Less(t, i, 250, "marlin serve did not start: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeSurvivesKill: with --sync group every acknowledged write is
// fsynced before its reply, so after SIGKILL and a restart every key
// reads back with its flags, CAS and expiry; SIGTERM stops the server
// with exit status 0.
func TestServeSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	cmd, addr := startServeChild(t, dir, "group")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	r := bufio.NewReader(c)
	const n = 300
	for i := range n {
		exp := 0
		if i%3 == 0 {
			exp = 3600
		}
		_, err := fmt.Fprintf(c, "set key%d %d %d %d\r\n%s\r\n", i, i, exp, len(fmt.Sprint(i)), fmt.Sprint(i))
		require.NoError(t, err)
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "STORED\r\n", l)
	}
	gets := func(c net.Conn, r *bufio.Reader) string {
		var sb strings.Builder
		for i := range n {
			_, err := fmt.Fprintf(c, "gets key%d\r\n", i)
			require.NoError(t, err)
			for {
				l, err := r.ReadString('\n')
				require.NoError(t, err)
				sb.WriteString(l)
				if l == "END\r\n" {
					break
				}
			}
		}
		return sb.String()
	}
	before := gets(c, r)
	require.Equal(t, n, strings.Count(before, "VALUE "))
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	cmd, addr = startServeChild(t, dir, "group")
	c, err = net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r = bufio.NewReader(c)
	require.Equal(t, before, gets(c, r), "flags, values and CAS after the kill")
	// TTLs too: the meta protocol shows the time left.
	_, err = fmt.Fprintf(c, "mg key0 t f\r\nmg key1 t f\r\n")
	require.NoError(t, err)
	l0, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Regexp(t, `^HD t(35[5-9]\d|3600) f0\r\n$`, l0)
	l1, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HD t-1 f1\r\n", l1)
	// Expiry is stored too: a key set with a 1 s TTL before a clean stop
	// is gone once that second has passed, after a restart.
	_, err = fmt.Fprintf(c, "set short 0 1 1\r\nx\r\n")
	require.NoError(t, err)
	l, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "STORED\r\n", l)
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status after SIGTERM")

	time.Sleep(1100 * time.Millisecond)
	cmd, addr = startServeChild(t, dir, "group")
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c, err = net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "get short key0\r\n")
	require.NoError(t, err)
	r = bufio.NewReader(c)
	var sb strings.Builder
	for {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		sb.WriteString(l)
		if l == "END\r\n" {
			break
		}
	}
	require.Regexp(t, regexp.MustCompile(`^VALUE key0 0 1\r\n0\r\nEND\r\n$`), sb.String(), "the expired key is gone, the others stay")
}

// TestServeNormalizeKeys: --normalize-keys makes every spelling of a
// composite key one item; its option flags need it.
func TestServeNormalizeKeys(t *testing.T) {
	cmd, addr := startServeChild(t, t.TempDir(), "none --normalize-keys , --normalize-dedup --normalize-first v")
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	_, err = fmt.Fprintf(c, "set os=a,v=2,c=in 0 0 1\r\nx\r\nmg c=in,v=2,os=a,c=in v\r\n")
	require.NoError(t, err)
	for _, want := range []string{"STORED\r\n", "VA 1\r\n", "x\r\n"} {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, want, l)
	}
	res := marlin(t, "serve", "--dir", t.TempDir(), "--normalize-dedup")
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.stderr, "need --normalize-keys")
}

// TestServeFillURL: with --fill-url a get that misses answers END at once
// and the key is loaded from the HTTP source, so a later get hits; bad
// fill flags are refused.
func TestServeFillURL(t *testing.T) {
	var asked atomic.Int64
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.URL.Query().Get("key") == "absent" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("loaded:" + r.URL.Query().Get("key")))
	}))
	defer src.Close()
	cmd, addr := startServeChild(t, t.TempDir(), "none --fill-url "+src.URL+"/v?key={key} --fill-workers 2 --fill-queue 100 --fill-negative-ttl 1h")
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	get := func(key string) string { return untilEnd(t, c, r, "get "+key) }
	require.Equal(t, "END\r\n", get("k"))
	require.Equal(t, "END\r\n", get("absent"))
	deadline := time.Now().Add(5 * time.Second)
	for get("k") == "END\r\n" {
		require.True(t, time.Now().Before(deadline), "the key was never loaded")
		time.Sleep(5 * time.Millisecond)
	}
	require.Equal(t, "VALUE k 0 8\r\nloaded:k\r\nEND\r\n", get("k"))
	require.Equal(t, "END\r\n", get("absent"))
	require.Equal(t, int64(2), asked.Load(), "one load per key; the absent one is remembered")

	for _, bad := range [][]string{{"--fill-url", "ftp://x/{key}"}, {"--fill-url", "http://x/nokey"}, {"--fill-url", "http://x/{key}", "--fill-workers", "0"}} {
		res := marlin(t, append([]string{"serve", "--dir", t.TempDir()}, bad...)...)
		require.NotEqual(t, 0, res.code, bad)
		require.Contains(t, res.stderr, "--fill-", bad)
	}
}

// TestServeMaxDisk: --max-disk turns on cache mode (stats settings says
// evictions on, limit_maxbytes is the limit); bad sizes and
// --evict-second-chance alone are refused.
func TestServeMaxDisk(t *testing.T) {
	cmd, addr := startServeChild(t, t.TempDir(), "none --max-disk 64MiB --evict-second-chance")
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	stats := func(cmd string) string { return untilEnd(t, c, r, cmd) }
	require.Contains(t, stats("stats"), "STAT limit_maxbytes 67108864\r\n")
	require.Contains(t, stats("stats"), "STAT evictions 0\r\n")
	require.Contains(t, stats("stats settings"), "STAT evictions on\r\n")

	for _, bad := range [][]string{{"--max-disk", "lots"}, {"--max-disk", "0"}, {"--evict-second-chance"}, {"--max-disk", "1MiB"}} {
		res := marlin(t, append([]string{"serve", "--dir", t.TempDir()}, bad...)...)
		require.NotEqual(t, 0, res.code, bad)
		require.Regexp(t, "max-disk|MaxDiskBytes", res.stderr, bad)
	}
}

// TestServeSharedValues: --shared-values stores equal data once (stats
// shared_values), and a database written with it is refused without it.
func TestServeSharedValues(t *testing.T) {
	dir := t.TempDir()
	cmd, addr := startServeChild(t, dir, "none --shared-values")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	r := bufio.NewReader(c)
	data := strings.Repeat("d", 2000)
	_, err = fmt.Fprintf(c, "set a 1 0 %d\r\n%s\r\nset b 2 0 %d\r\n%s\r\nget b\r\nstats\r\n", len(data), data, len(data), data)
	require.NoError(t, err)
	var out strings.Builder
	for {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		out.WriteString(l)
		if strings.HasPrefix(out.String(), "STORED\r\nSTORED\r\nVALUE") && strings.Count(out.String(), "END\r\n") == 2 {
			break
		}
	}
	require.Contains(t, out.String(), "VALUE b 2 2000\r\n"+data+"\r\nEND\r\n")
	require.Contains(t, out.String(), "STAT shared_values 1\r\n")
	require.Contains(t, out.String(), "STAT shared_refs 2\r\n")
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait())

	res := marlin(t, "serve", "--dir", dir, "--listen", "127.0.0.1:0")
	require.NotEqual(t, 0, res.code, "a shared-values database without the flag")
	res = marlin(t, "serve", "--dir", t.TempDir(), "--shared-values", "--max-disk", "1GiB")
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.stderr, "--shared-values cannot be combined with --max-disk")
}

// untilEnd sends one command line on c and returns the reply up to and
// including its END line (get, stats).
func untilEnd(t *testing.T, c net.Conn, r *bufio.Reader, cmd string) string {
	t.Helper()
	_, err := fmt.Fprintf(c, "%s\r\n", cmd)
	require.NoError(t, err)
	var sb strings.Builder
	for {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		sb.WriteString(l)
		if l == "END\r\n" {
			return sb.String()
		}
	}
}

// TestServeBase: --base serves a bundle of plain values (built from a
// dump file) under the database: its keys read as items with flags 0,
// sets and deletes go on top; POST /fold on --admin folds both into a new
// base of items without a restart, and a restart without --base serves
// the same view.
func TestServeBase(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "pairs.tsv")
	require.NoError(t, os.WriteFile(src, []byte("a\tbase-a\nb\tbase-b\nc\tbase-c\n"), 0o644))
	bundleFile := filepath.Join(tmp, "base.bundle")
	res := marlin(t, "bundle", "build", src, "-o", bundleFile, "--quiet")
	require.Equal(t, 0, res.code, res.stderr)
	dir := filepath.Join(tmp, "db")
	adminAddr := freeAddr(t)
	cmd, addr := startServeChild(t, dir, "none --base "+bundleFile+" --admin "+adminAddr)
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	r := bufio.NewReader(c)
	do := func(line string) string { return untilEnd(t, c, r, line) }
	require.Equal(t, "VALUE a 0 6\r\nbase-a\r\nVALUE c 0 6\r\nbase-c\r\nEND\r\n", do("get a zz c"))
	gets := do("gets b")
	require.Regexp(t, `^VALUE b 0 6 \d+\r\nbase-b\r\nEND\r\n$`, gets)
	cas := strings.Fields(gets)[4]
	_, err = fmt.Fprintf(c, "cas b 5 0 3 %s\r\nnew\r\ndelete a\r\nset d 7 0 1\r\nd\r\n", cas)
	require.NoError(t, err)
	for _, want := range []string{"STORED\r\n", "DELETED\r\n", "STORED\r\n"} {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, want, l)
	}
	want := "VALUE b 5 3\r\nnew\r\nVALUE c 0 6\r\nbase-c\r\nVALUE d 7 1\r\nd\r\nEND\r\n"
	require.Equal(t, want, do("get a b c d"))

	resp, err := http.Post("http://"+adminAddr+"/fold", "", nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, string(body))
	require.Equal(t, want, do("get a b c d"), "the same view after the fold, without a restart")
	c.Close()
	stop()

	cmd, addr = startServeChild(t, dir, "none")
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	c, err = net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r = bufio.NewReader(c)
	require.Equal(t, want, untilEnd(t, c, r, "get a b c d"), "the database records its base")

	res = marlin(t, "serve", "--dir", t.TempDir(), "--base", bundleFile, "--shared-values")
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.stderr, "--base")
}
