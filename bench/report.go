package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// RSSAnon returns the process's resident anonymous memory (RssAnon in
// /proc/self/status) in bytes, or 0 where that is not available.
func RSSAnon() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// progress prints the phase's rate until stop closes: one redrawn line on
// a terminal, otherwise a line every 5 seconds.
func (r *runner) progress(name string, total int64, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	out := r.cfg.Progress
	if out == nil {
		<-stop
		return
	}
	every := 5 * time.Second
	if r.cfg.Terminal {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	start, last, lastN := time.Now(), time.Now(), int64(0)
	for {
		select {
		case <-stop:
			if r.cfg.Terminal {
				fmt.Fprint(out, "\r\033[K")
			}
			return
		case now := <-t.C:
			n := r.done.Load()
			rate := float64(n-lastN) / now.Sub(last).Seconds()
			last, lastN = now, n
			elapsed := now.Sub(start)
			line := fmt.Sprintf("%s: %s ops, %s ops/s, %s elapsed", name,
				humanize.Comma(n), humanize.Comma(int64(rate)), elapsed.Round(time.Second))
			if total > 0 && n > 0 {
				eta := time.Duration(float64(elapsed) * float64(total-n) / float64(n))
				line += fmt.Sprintf(", %.0f%%, ETA %s", 100*float64(n)/float64(total), eta.Round(time.Second))
			} else if r.cfg.Ops == 0 && r.cfg.Duration > 0 && name != "load" {
				line += fmt.Sprintf(", %s left", (r.cfg.Duration - elapsed).Round(time.Second))
			}
			if r.cfg.Terminal {
				fmt.Fprintf(out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(out, line)
			}
		}
	}
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// WriteText writes the report for people.
func (rep *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "marlin bench: workload %s, %s distribution, %s keys of %d bytes, values %s, %d goroutines, sync %s\n",
		rep.Workload, rep.Dist, humanize.Comma(int64(rep.Keys)), rep.KeySize, sizeRange(rep.ValueMin, rep.ValueMax),
		rep.Goroutines, rep.Sync)
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "\n%-10s %s ops in %.2fs: %s ops/s\n", p.Name, humanize.Comma(p.Ops), p.Seconds,
			humanize.Comma(int64(p.OpsPerSec)))
		names := make([]string, 0, len(p.Latency))
		for n := range p.Latency {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) > 0 {
			fmt.Fprintf(w, "  %-7s %12s %9s %9s %9s %9s %9s\n", "latency", "count", "p50", "p90", "p99", "p99.9", "max")
		}
		for _, n := range names {
			l := p.Latency[n]
			fmt.Fprintf(w, "  %-7s %12s %9s %9s %9s %9s %9s\n", n, humanize.Comma(l.Count),
				dur(l.P50), dur(l.P90), dur(l.P99), dur(l.P999), dur(l.Max))
		}
	}
	fmt.Fprintf(w, "\nkeys in db      %s\n", humanize.Comma(rep.KeysInDB))
	fmt.Fprintf(w, "memory          RssAnon %s (%s since open, %.1f B/key), Go heap %s, index %s\n",
		humanize.IBytes(uint64(max(rep.RSSAnon, 0))), humanize.IBytes(uint64(max(rep.RSSAnonUsed, 0))), rep.RAMPerKey,
		humanize.IBytes(uint64(rep.Heap)), humanize.IBytes(uint64(rep.IndexBytes)))
	fmt.Fprintf(w, "disk            %s (%.1f B/key), write amplification %.2f\n",
		humanize.IBytes(uint64(rep.DiskBytes)), rep.DiskPerKey, rep.WriteAmp)
	fmt.Fprintf(w, "open            %s, restart %s\n", secs(rep.OpenSecs), secs(rep.RestartSecs))
	if rep.Dir != "" {
		fmt.Fprintf(w, "data directory  %s\n", rep.Dir)
	}
	if rep.Errors > 0 {
		fmt.Fprintf(w, "WRONG RESULTS   %d\n", rep.Errors)
	}
}

func sizeRange(lo, hi int) string {
	if lo == hi {
		return fmt.Sprintf("%d bytes", lo)
	}
	return fmt.Sprintf("%d..%d bytes", lo, hi)
}

func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", ns)
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(ns)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(ns)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func secs(s float64) string { return dur(int64(s * 1e9)) }
