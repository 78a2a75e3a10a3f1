package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency summarizes one operation kind's latencies, in nanoseconds.
type Latency struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50_ns"`
	P90   int64 `json:"p90_ns"`
	P99   int64 `json:"p99_ns"`
	P999  int64 `json:"p999_ns"`
	Max   int64 `json:"max_ns"`
	Mean  int64 `json:"mean_ns"`
}

// hist records latencies of one operation kind in one goroutine (HDR
// histograms are not safe for concurrent use; they are merged at the end).
type hist struct{ h *hdrhistogram.Histogram }

// Latencies from 100 ns to 100 s with 3 significant digits.
func newHist() hist { return hist{hdrhistogram.New(100, int64(100*time.Second), 3)} }

func (h hist) record(d time.Duration) {
	v := max(int64(d), 100)
	_ = h.h.RecordValue(min(v, h.h.HighestTrackableValue()))
}

func (h hist) merge(o hist) { h.h.Merge(o.h) }

func (h hist) summary() Latency {
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
