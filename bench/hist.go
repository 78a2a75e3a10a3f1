package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency summarizes one operation kind's latencies, in nanoseconds.
type Latency struct {
	Count int64 `json:"count"`   // operations recorded
	P50   int64 `json:"p50_ns"`  // median
	P90   int64 `json:"p90_ns"`  // 90th percentile
	P99   int64 `json:"p99_ns"`  // 99th percentile
	P999  int64 `json:"p999_ns"` // 99.9th percentile
	Max   int64 `json:"max_ns"`  // the slowest
	Mean  int64 `json:"mean_ns"` // the average
}

// Histogram records latencies of one operation kind. HDR histograms are
// not safe for concurrent use: every goroutine has its own, and they are
// merged at the end of a phase.
type Histogram struct{ h *hdrhistogram.Histogram }

// Latencies from 1 ns to 100 s, with 3 significant digits: every
// percentile is within 0.1% of a latency that was recorded.
const (
	histLowest  = 1
	histHighest = int64(100 * time.Second)
	histDigits  = 3
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{hdrhistogram.New(histLowest, histHighest, histDigits)}
}

// Record adds one latency (clamped to the histogram's range).
func (h *Histogram) Record(d time.Duration) {
	_ = h.h.RecordValue(min(max(int64(d), histLowest), histHighest))
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count returns the number of latencies recorded.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Summary returns the count, percentiles, max and mean.
func (h *Histogram) Summary() Latency {
	return Latency{
		Count: h.h.TotalCount(),
		P50:   h.h.ValueAtQuantile(50),
		P90:   h.h.ValueAtQuantile(90),
		P99:   h.h.ValueAtQuantile(99),
		P999:  h.h.ValueAtQuantile(99.9),
		Max:   h.h.Max(),
		Mean:  int64(h.h.Mean()),
	}
}

// MergeSummaries merges per-goroutine histograms (nil entries skipped)
// and summarizes them; ok is false if none recorded anything.
func MergeSummaries(hs []*Histogram) (l Latency, ok bool) {
	m := NewHistogram()
	for _, h := range hs {
		if h != nil {
			m.Merge(h)
		}
	}
	if m.Count() == 0 {
		return Latency{}, false
	}
	return m.Summary(), true
}
