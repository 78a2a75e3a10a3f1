package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProgressOnlyOnATerminal: piped or quiet, a long command prints no
// progress line (a log would fill with redraws).
func TestProgressOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	calls := 0
	stop := progressLine(&buf, false, func(time.Duration) string { calls++; return "x" })
	time.Sleep(600 * time.Millisecond)
	stop()
	stop() // twice is fine
	require.Empty(t, buf.String())
	require.Zero(t, calls)

	require.Equal(t, "10s", eta(50, 100, 10*time.Second))
	require.Equal(t, "?", eta(0, 100, time.Second))
	require.Equal(t, "?", eta(100, 100, time.Second))
}
