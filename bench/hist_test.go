package bench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// within checks got is within HDR's 3-significant-digit precision of want.
func within(t *testing.T, want, got int64, what string) {
	t.Helper()
	require.InDelta(t, float64(want), float64(got), math.Max(1, float64(want)*0.001), what)
}

func TestHistogramPercentiles(t *testing.T) {
	// Latencies 1µs, 2µs, ..., 10000µs, recorded in random order over four
	// per-goroutine histograms and merged.
	const n = 10_000
	hs := []*Histogram{NewHistogram(), NewHistogram(), NewHistogram(), NewHistogram(), nil}
	r := rand.New(rand.NewPCG(1, 1))
	for _, i := range r.Perm(n) {
		hs[i%4].Record(time.Duration(i+1) * time.Microsecond)
	}
	l, ok := MergeSummaries(hs)
	require.True(t, ok)
	require.Equal(t, int64(n), l.Count)
	us := int64(time.Microsecond)
	within(t, 5000*us, l.P50, "p50")
	within(t, 9000*us, l.P90, "p90")
	within(t, 9900*us, l.P99, "p99")
	within(t, 9990*us, l.P999, "p99.9")
	within(t, 10000*us, l.Max, "max")
	within(t, 5000*us+us/2, l.Mean, "mean")
}

func TestHistogramSkewed(t *testing.T) {
	// 990 fast operations and 10 slow ones: the tail shows at p99.9, not p99.
	h := NewHistogram()
	for range 990 {
		h.Record(250 * time.Nanosecond)
	}
	for range 10 {
		h.Record(3 * time.Millisecond)
	}
	l := h.Summary()
	within(t, 250, l.P50, "p50")
	within(t, 250, l.P99, "p99")
	within(t, int64(3*time.Millisecond), l.P999, "p99.9")
	within(t, int64(3*time.Millisecond), l.Max, "max")
}

func TestHistogramClampsAndEmpty(t *testing.T) {
	_, ok := MergeSummaries([]*Histogram{nil, NewHistogram()})
	require.False(t, ok)
	h := NewHistogram()
	h.Record(0)
	h.Record(-5)
	h.Record(time.Hour)
	l := h.Summary()
	require.Equal(t, int64(3), l.Count)
	require.Equal(t, int64(1), l.P50)
	within(t, histHighest, l.Max, "max clamps to the highest trackable value")
}
