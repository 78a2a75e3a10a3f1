package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

// waitKeys waits until the engine holds want keys.
func waitKeys(t *testing.T, db *engine.DB, want int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := db.Stats()
		require.NoError(t, err)
		if st.Keys == want {
			return
		}
		require.True(t, time.Now().Before(deadline), "engine keys %d, want %d", st.Keys, want)
		time.Sleep(20 * time.Millisecond)
	}
}

func fillItems(t *testing.T, addr, prefix string, n int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "set %s%d 0 0 1 noreply\r\nx\r\n", prefix, i)
	}
	b.WriteString("mn\r\n")
	require.Equal(t, "MN\r\n", exchange(t, addr, b.String()))
}

// TestFlushSweep: flush_all answers at once and curr_items drops to 0 at
// once; the sweep then deletes the flushed items from the engine in the
// background, and an item stored after the flush is kept.
func TestFlushSweep(t *testing.T) {
	addr, _, db := startServer(t, "", Config{})
	fillItems(t, addr, "old", 5000)
	out := exchange(t, addr, "flush_all\r\nset new 0 0 1\r\nn\r\nstats\r\n")
	require.True(t, strings.HasPrefix(out, "OK\r\nSTORED\r\n"), out)
	require.Regexp(t, `STAT curr_items [01]\r\n`, out, "the flushed items are not counted (new may be)")
	waitKeys(t, db, 2) // new and the flush state
	require.Contains(t, exchange(t, addr, "stats\r\n"), "STAT curr_items 1\r\n")
	require.Equal(t, "VALUE new 0 1\r\nn\r\nEND\r\n", exchange(t, addr, "get old1 old4999 new\r\n"))
}

// TestFlushSweepResumesAfterRestart: a server shut down before its sweep
// ended resumes it at the next start, and a finished sweep is not run
// again.
func TestFlushSweepResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	addr, s, db, _ := openServer(t, dir, Config{})
	fillItems(t, addr, "k", 20000)
	// Shut down as soon as the flush is answered: the sweep is cut short.
	require.Equal(t, "OK\r\n", exchange(t, addr, "flush_all\r\n"))
	require.NoError(t, s.Shutdown(context.Background()))
	st, err := db.Stats()
	require.NoError(t, err)
	t.Logf("engine keys when the sweep was stopped: %d", st.Keys)
	f, err := db.Get(flushKey)
	require.NoError(t, err)
	fs, err := decodeFlush(f)
	require.NoError(t, err)
	if st.Keys > 1 {
		require.Less(t, fs.swept, fs.threshold, "an unfinished sweep is not marked done")
	}
	require.NoError(t, db.Close())

	addr, s, db, _ = openServer(t, dir, Config{})
	waitKeys(t, db, 1)
	require.Equal(t, "END\r\n", exchange(t, addr, "get k1 k19999\r\n"))
	require.NoError(t, s.Shutdown(context.Background()))
	f, err = db.Get(flushKey)
	require.NoError(t, err)
	fs, err = decodeFlush(f)
	require.NoError(t, err)
	require.Equal(t, fs.threshold, fs.swept)
	require.NoError(t, db.Close())
}
