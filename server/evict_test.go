package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/marlinkv/marlin/engine"
	"github.com/stretchr/testify/require"
)

// statValue reads one general stat over a new connection.
func statValue(t *testing.T, addr, name string) string {
	t.Helper()
	for _, line := range strings.Split(exchange(t, addr, "stats\r\n"), "\r\n") {
		if v, ok := strings.CutPrefix(line, "STAT "+name+" "); ok {
			return v
		}
	}
	t.Fatalf("no stat %s", name)
	return ""
}

// TestCacheModeEvicts: a server over a cache-mode database (--max-disk)
// keeps its files under the limit by evicting the oldest items, counts
// them in stats evictions, and still serves the newest.
func TestCacheModeEvicts(t *testing.T) {
	const limit = 1 << 20
	db, err := engine.Open(t.TempDir(), &engine.Options{Sync: engine.SyncNone, SegmentSize: 64 << 10,
		MaxValueSize: 32 << 10, MaxDiskBytes: limit, CompactionInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	s, err := New(db, Config{MaxItemSize: 16 << 10})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
		<-done
		require.NoError(t, db.Close())
	}()
	addr := ln.Addr().String()
	require.Equal(t, strconv.Itoa(limit), statValue(t, addr, "limit_maxbytes"))

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	value := strings.Repeat("v", 300)
	const n = 12000 // about 3.8 MiB of items
	for i := range n {
		fmt.Fprintf(w, "set key-%06d 7 0 %d\r\n%s\r\n", i, len(value), value)
		if i%100 == 99 {
			require.NoError(t, w.Flush())
			for range 100 {
				line, err := r.ReadString('\n')
				require.NoError(t, err)
				require.Equal(t, "STORED\r\n", line)
			}
		}
	}
	require.Eventually(t, func() bool {
		st, err := db.Stats()
		require.NoError(t, err)
		return st.Evictions > 0 && st.DiskBytes <= limit
	}, 10*time.Second, 20*time.Millisecond)
	// The pass goes on down to the limit less its slack: wait until it
	// is over (no eviction for 200 ms) before comparing the counts.
	var st engine.Stats
	require.Eventually(t, func() bool {
		a, err := db.Stats()
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		st, err = db.Stats()
		require.NoError(t, err)
		return a.Evictions == st.Evictions
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, strconv.FormatInt(st.Evictions, 10), statValue(t, addr, "evictions"))
	require.Equal(t, "END\r\n", exchange(t, addr, "get key-000000\r\n"), "the oldest item is evicted")
	last := fmt.Sprintf("key-%06d", n-1)
	require.Equal(t, "VALUE "+last+" 7 300\r\n"+value+"\r\nEND\r\n", exchange(t, addr, "get "+last+"\r\n"))
	require.Contains(t, exchange(t, addr, "stats settings\r\n"), "STAT evictions on\r\n")
	require.Contains(t, exchange(t, addr, "stats items\r\n"), "STAT items:1:evicted "+strconv.FormatInt(st.Evictions, 10)+"\r\n")
}
