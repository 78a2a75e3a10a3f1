package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// WriteText prints the fill run: the per-second table, then the totals.
func (r *FillReport) WriteText(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "fill workload: %s keys (zipfian %.2f, scrambled), %s gets/s from %d clients for %s, loader %s per key, %d workers, queue %d\n",
		humanize.Comma(int64(c.Keys)), c.Theta, humanize.Comma(int64(c.Rate)), c.Clients, c.Duration,
		c.LoadLatency, c.Fill.Workers, c.Fill.QueueSize)
	fmt.Fprintf(w, "%4s %9s %7s %7s %9s %9s %9s %8s %8s %9s %9s\n",
		"sec", "gets", "hit%", "ideal%", "p50", "p99", "max", "queue", "inflight", "filled", "dropped")
	for _, s := range r.Seconds {
		fmt.Fprintf(w, "%4d %9d %6.1f%% %6.1f%% %9s %9s %9s %8d %8d %9d %9d\n",
			s.Second, s.Requests, 100*s.HitRate, 100*s.IdealHitRate, dur(s.P50), dur(s.P99), dur(s.Max),
			s.QueueDepth, s.InFlight, s.Filled, s.Dropped)
	}
	rate := 0.0
	if r.Requests > 0 {
		rate = float64(r.Hits) / float64(r.Requests)
	}
	fmt.Fprintf(w, "gets: %s in %s (%s/s), hit rate %.1f%% overall", humanize.Comma(r.Requests),
		r.Elapsed.Round(time.Millisecond), humanize.Comma(int64(float64(r.Requests)/r.Elapsed.Seconds())), 100*rate)
	if n := len(r.Seconds); n > 0 {
		fmt.Fprintf(w, ", %.1f%% in the last second", 100*r.Seconds[n-1].HitRate)
	}
	if r.SecondTo90 > 0 {
		fmt.Fprintf(w, ", 90%% reached in second %d", r.SecondTo90)
	}
	fmt.Fprintln(w)
	for _, l := range []struct {
		name string
		l    Latency
	}{{"all", r.All}, {"hits", r.Hit}, {"misses", r.Miss}} {
		fmt.Fprintf(w, "reply latency %-6s p50 %s  p99 %s  p99.9 %s  max %s  (%s gets)\n", l.name,
			dur(l.l.P50), dur(l.l.P99), dur(l.l.P999), dur(l.l.Max), humanize.Comma(l.l.Count))
	}
	f := r.Fill
	fmt.Fprintf(w, "fill queue: queued %d, coalesced %d, dropped %d, filled %d, failed %d; queue wait p50 %s p99 %s; load p50 %s p99 %s\n",
		f.Queued, f.Coalesced, f.Dropped, f.Filled, f.Failed, f.Wait.P50, f.Wait.P99, f.Load.P50, f.Load.P99)
	fmt.Fprintf(w, "clients fell behind their schedule by at most %s; %d errors; %s keys stored, %s on disk\n",
		r.MaxLag.Round(time.Microsecond), r.Errors, humanize.Comma(r.Keys), humanize.IBytes(uint64(r.DiskBytes)))
}

// WriteJSON prints the report as JSON.
func (r *FillReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSVG draws the run as two charts over its seconds: the hit rate
// (measured, and the ideal of an instant fill) on top; the reply p99 and
// the fill queue's depth below, with the 1 ms line.
func (r *FillReport) WriteSVG(w io.Writer) error {
	const (
		width, height = 960, 640
		left, right   = 70, 80
		top1, h1      = 50, 230
		top2, h2      = 350, 230
	)
	n := len(r.Seconds)
	if n == 0 {
		return fmt.Errorf("no seconds to draw")
	}
	pw := float64(width - left - right)
	x := func(sec int) float64 { return float64(left) + pw*float64(sec)/float64(n) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	c := r.Config
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">marlin bench fill: %s gets/s over %s zipfian keys, loader %s per key</text>`+"\n",
		left, humanize.Comma(int64(c.Rate)), humanize.Comma(int64(c.Keys)), c.LoadLatency)

	// Axes and grid for both panels.
	axes := func(top, h int, label string) {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%d" fill="none" stroke="#999"/>`+"\n", left, top, pw, h)
		fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", top+h/2, top+h/2, label)
		step := max(1, n/10)
		for s := 0; s <= n; s += step {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x(s), top, x(s), top+h)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d s</text>`+"\n", x(s), top+h+16, s)
		}
	}
	axes(top1, h1, "hit rate")
	y1 := func(f float64) float64 { return float64(top1+h1) - float64(h1)*f }
	for p := 0; p <= 100; p += 20 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`+"\n", left, y1(float64(p)/100), float64(left)+pw, y1(float64(p)/100))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d%%</text>`+"\n", left-6, y1(float64(p)/100)+4, p)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#c33" stroke-dasharray="2,3"/>`+"\n", left, y1(0.9), float64(left)+pw, y1(0.9))
	line := func(pts func(i int) float64, y func(float64) float64, color, dash string) {
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="`, color, dash)
		for i := range r.Seconds {
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i)+pw/float64(n)/2, y(pts(i)))
		}
		b.WriteString(`"/>` + "\n")
	}
	line(func(i int) float64 { return r.Seconds[i].IdealHitRate }, y1, "#999", ` stroke-dasharray="6,4"`)
	line(func(i int) float64 { return r.Seconds[i].HitRate }, y1, "#1f6fd1", "")
	legend := func(xp, yp int, color, dash, text string) {
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/><text x="%d" y="%d">%s</text>`+"\n",
			xp, yp, xp+24, yp, color, dash, xp+30, yp+4, text)
	}
	legend(left+10, top1+16, "#1f6fd1", "", "hit rate")
	legend(left+120, top1+16, "#999", ` stroke-dasharray="6,4"`, "ideal (instant fill)")
	legend(left+290, top1+16, "#c33", ` stroke-dasharray="2,3"`, "90%")

	// Lower panel: p99 (left axis, µs) and queue depth (right axis).
	axes(top2, h2, "reply p99 (µs)")
	maxP99 := int64(time.Millisecond)
	maxQ := 1
	for _, s := range r.Seconds {
		maxP99 = max(maxP99, s.P99)
		maxQ = max(maxQ, s.QueueDepth)
	}
	y2 := func(ns float64) float64 { return float64(top2+h2) - float64(h2)*ns/float64(maxP99) }
	for i := 0; i <= 4; i++ {
		v := float64(maxP99) * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y2(v)+4, v/1e3)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#c33" stroke-dasharray="2,3"/>`+"\n", left, y2(1e6), float64(left)+pw, y2(1e6))
	yq := func(q float64) float64 { return float64(top2+h2) - float64(h2)*q/float64(maxQ) }
	for i := 0; i <= 4; i++ {
		v := float64(maxQ) * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f">%s</text>`+"\n", float64(left)+pw+6, yq(v)+4, humanize.Comma(int64(v)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" transform="rotate(90 %d %d)" text-anchor="middle">fill queue depth</text>`+"\n",
		width-14, top2+h2/2, width-14, top2+h2/2)
	line(func(i int) float64 { return float64(r.Seconds[i].QueueDepth) }, yq, "#e08a00", "")
	line(func(i int) float64 { return float64(r.Seconds[i].P99) }, y2, "#2a9d3a", "")
	legend(left+10, top2+16, "#2a9d3a", "", "reply p99 (hits and misses)")
	legend(left+230, top2+16, "#e08a00", "", "queue depth")
	legend(left+350, top2+16, "#c33", ` stroke-dasharray="2,3"`, "1 ms")
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
