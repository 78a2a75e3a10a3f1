package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/dustin/go-humanize"
)

// WriteText prints the run: the per-second table, then the comparison of
// the seconds with and without reclamation.
func (r *SpikeReport) WriteText(w io.Writer) {
	c := r.Config
	what := "reclaimed"
	if c.Workload == "expire" {
		fmt.Fprintf(w, "expire workload: %s keys sharing one expiry %s into the run, gets of %s keys without a TTL, %s gets/s from %d clients for %s\n",
			humanize.Comma(int64(c.Keys)), c.ExpireAt, humanize.Comma(int64(max(c.Keys/10, 1000))),
			humanize.Comma(int64(c.Rate)), c.Clients, c.Duration)
	} else {
		what = "evicted"
		fmt.Fprintf(w, "evict workload: cache mode limit %s, %s keys of %d B values loaded, %s puts/s of new keys, gets of the newest half-limit of keys, %s gets/s from %d clients for %s\n",
			humanize.IBytes(uint64(c.MaxDisk)), humanize.Comma(int64(c.Keys)), c.ValueSize,
			humanize.Comma(int64(c.WriteRate)), humanize.Comma(int64(c.Rate)), c.Clients, c.Duration)
	}
	fmt.Fprintf(w, "load: %s keys in %s\n", humanize.Comma(int64(r.Loaded)), r.Load.Round(time.Millisecond))
	fmt.Fprintf(w, "%4s %9s %7s %9s %9s %9s %10s %9s %10s\n", "sec", "gets", "hit%", "p50", "p99", "max", what, "puts", "disk")
	for _, s := range r.Seconds {
		hit := 0.0
		if s.Gets > 0 {
			hit = float64(s.Hits) / float64(s.Gets)
		}
		fmt.Fprintf(w, "%4d %9d %6.1f%% %9s %9s %9s %10d %9d %10s\n", s.Second, s.Gets, 100*hit,
			dur(s.P50), dur(s.P99), dur(s.Max), s.Reclaimed, s.Puts, humanize.IBytes(uint64(s.DiskBytes)))
	}
	for _, l := range []struct {
		name string
		l    Latency
	}{{"seconds without reclamation", r.Quiet}, {"seconds with reclamation", r.Active}, {"all", r.All}} {
		fmt.Fprintf(w, "get latency, %-28s p50 %s  p99 %s  p99.9 %s  max %s  (%s gets)\n", l.name,
			dur(l.l.P50), dur(l.l.P99), dur(l.l.P999), dur(l.l.Max), humanize.Comma(l.l.Count))
	}
	fmt.Fprintf(w, "p99 with reclamation / without: %.2fx (target at most 2x); %s keys %s; clients behind schedule by at most %s; %d errors\n",
		r.Ratio, humanize.Comma(r.Reclaimed), what, r.MaxLag.Round(time.Microsecond), r.Errors)
}

// WriteJSON prints the report as JSON.
func (r *SpikeReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
