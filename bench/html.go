package bench

import (
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// The HTML report (marlin bench --report FILE.html): one self-contained
// page, no script and no network, with the run's settings, a chart of the
// rate over time for each phase and one of the latency percentiles for
// each operation kind, drawn as inline SVG, and the same figures as
// tables (for screen readers, and for copying).

// Sample is the rate of a phase over one interval.
type Sample struct {
	At        float64 `json:"at_seconds"`  // the interval's end, since the phase began
	OpsPerSec float64 `json:"ops_per_sec"` // operations over the interval
}

// sampleInterval is how often sampleRate reads the counter.
const sampleInterval = 250 * time.Millisecond

// maxSamples bounds a timeline: a long phase is merged into wider
// intervals (pairs of neighbours averaged) past it.
const maxSamples = 400

// sampleRate reads completed every sampleInterval until stop closes and
// returns the rate over each interval (the last one partial).
func sampleRate(completed func() int64, stop <-chan struct{}) []Sample {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	start := time.Now()
	last, lastN := start, int64(0)
	var out []Sample
	add := func(now time.Time) {
		n := completed()
		if d := now.Sub(last).Seconds(); d > 0 {
			out = append(out, Sample{At: now.Sub(start).Seconds(), OpsPerSec: float64(n-lastN) / d})
		}
		last, lastN = now, n
		if len(out) > maxSamples {
			out = halve(out)
		}
	}
	for {
		select {
		case <-stop:
			add(time.Now())
			return out
		case now := <-t.C:
			add(now)
		}
	}
}

// halve merges neighbouring samples (their rates averaged, weighted by
// their intervals).
func halve(s []Sample) []Sample {
	out := s[:0]
	prev := 0.0
	for i := 0; i < len(s); i += 2 {
		if i+1 == len(s) {
			out = append(out, s[i])
			break
		}
		a, b := s[i], s[i+1]
		da, db := a.At-prev, b.At-a.At
		out = append(out, Sample{At: b.At, OpsPerSec: (a.OpsPerSec*da + b.OpsPerSec*db) / (da + db)})
		prev = b.At
	}
	return out
}

// chart is an SVG line or bar chart's geometry, computed in Go so the
// template only places it.
type chart struct {
	W, H          int
	Points        string  // polyline points
	Dots          []point // markers at the points, when few (a short phase has one)
	XTicks        []tick
	YTicks        []tick
	Bars          []bar
	XLabel, Title string
}

type point struct{ X, Y float64 }

type tick struct {
	Pos   float64
	Label string
}

type bar struct {
	X, Y, W, H float64
	Label      string // above the bar
	Name       string // under the bar
}

const (
	chartW, chartH = 720, 260
	padL, padR     = 70, 20
	padT, padB     = 30, 40
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func rateChart(p Phase) chart {
	c := chart{W: chartW, H: chartH, Title: p.Name + ": operations per second", XLabel: "seconds"}
	maxT := p.Seconds
	maxR := 0.0
	for _, s := range p.Timeline {
		maxT = math.Max(maxT, s.At)
		maxR = math.Max(maxR, s.OpsPerSec)
	}
	maxT, maxR = math.Max(maxT, 1e-3), niceMax(maxR)
	x := func(t float64) float64 { return padL + t/maxT*float64(chartW-padL-padR) }
	y := func(r float64) float64 { return float64(chartH-padB) - r/maxR*float64(chartH-padT-padB) }
	var pts []string
	for _, s := range p.Timeline {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.At), y(s.OpsPerSec)))
		if len(p.Timeline) <= 60 {
			c.Dots = append(c.Dots, point{x(s.At), y(s.OpsPerSec)})
		}
	}
	c.Points = strings.Join(pts, " ")
	for i := 0; i <= 4; i++ {
		c.YTicks = append(c.YTicks, tick{y(maxR * float64(i) / 4), si(maxR * float64(i) / 4)})
		c.XTicks = append(c.XTicks, tick{x(maxT * float64(i) / 4), fmt.Sprintf("%.3g", maxT*float64(i)/4)})
	}
	return c
}

func latencyChart(phase, op string, l Latency) chart {
	c := chart{W: chartW, H: chartH, Title: fmt.Sprintf("%s: %s latency percentiles", phase, op)}
	vals := []struct {
		name string
		ns   int64
	}{{"p50", l.P50}, {"p90", l.P90}, {"p99", l.P99}, {"p99.9", l.P999}, {"max", l.Max}}
	// A log scale: the max is often 100 times the median.
	hi := 1.0
	for _, v := range vals {
		hi = math.Max(hi, float64(v.ns))
	}
	top := math.Pow(10, math.Ceil(math.Log10(hi)))
	lo := math.Pow(10, math.Floor(math.Log10(math.Max(float64(l.P50), 1))))
	if top <= lo {
		top = lo * 10
	}
	plotH := float64(chartH - padT - padB)
	y := func(ns float64) float64 {
		ns = math.Max(ns, lo)
		return float64(chartH-padB) - (math.Log10(ns)-math.Log10(lo))/(math.Log10(top)-math.Log10(lo))*plotH
	}
	slot := float64(chartW-padL-padR) / float64(len(vals))
	for i, v := range vals {
		yy := y(float64(v.ns))
		c.Bars = append(c.Bars, bar{X: padL + float64(i)*slot + slot*0.2, Y: yy, W: slot * 0.6, H: float64(chartH-padB) - yy,
			Label: dur(v.ns), Name: v.name})
	}
	for d := lo; d <= top*1.0001; d *= 10 {
		c.YTicks = append(c.YTicks, tick{y(d), dur(int64(d))})
	}
	return c
}

// si prints a rate with a k or M suffix.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

type htmlPhase struct {
	Phase
	Rate      chart
	Latencies []htmlLatency
}

type htmlLatency struct {
	Op    string
	L     Latency
	Chart chart
}

// WriteHTML writes rep as a self-contained HTML page.
func WriteHTML(w io.Writer, rep *Report) error {
	var phases []htmlPhase
	for _, p := range rep.Phases {
		hp := htmlPhase{Phase: p, Rate: rateChart(p)}
		for _, op := range slices.Sorted(maps.Keys(p.Latency)) {
			hp.Latencies = append(hp.Latencies, htmlLatency{Op: op, L: p.Latency[op], Chart: latencyChart(p.Name, op, p.Latency[op])})
		}
		phases = append(phases, hp)
	}
	return htmlTmpl.Execute(w, struct {
		R      *Report
		Phases []htmlPhase
	}{rep, phases})
}

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"si": si, "dur": dur,
	"f1": func(v float64) string { return fmt.Sprintf("%.1f", v) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>marlin bench: {{.R.Workload}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
svg { display: block; margin: 0.5em 0 1.5em; }
.axis { stroke: #888; stroke-width: 1; }
.grid { stroke: #eee; stroke-width: 1; }
.line { fill: none; stroke: #1f6fb2; stroke-width: 2; }
.bar, .dot { fill: #1f6fb2; }
text { font: 12px system-ui, sans-serif; fill: #333; }
.bad { color: #b00; font-weight: bold; }
</style>
</head>
<body>
<h1>marlin bench: {{.R.Workload}}</h1>
<table id="settings">
<tr><th>setting</th><th>value</th></tr>
<tr><td>workload</td><td>{{.R.Workload}}{{if .R.Mix}} ({{.R.Mix}}){{end}}</td></tr>
<tr><td>key distribution</td><td>{{.R.Dist}}</td></tr>
<tr><td>keys</td><td>{{.R.Keys}}</td></tr>
<tr><td>goroutines</td><td>{{.R.Goroutines}}</td></tr>
<tr><td>sync</td><td>{{.R.Sync}}</td></tr>
<tr><td>keys, bytes</td><td>{{.R.KeyMin}} to {{.R.KeyMax}}</td></tr>
<tr><td>values, bytes</td><td>{{.R.ValueMin}} to {{.R.ValueMax}}</td></tr>
<tr><td>machine</td><td>{{.R.Env.OS}}/{{.R.Env.Arch}}, {{.R.Env.CPUs}} CPUs, GOMAXPROCS {{.R.Env.GOMAXPROCS}}, {{.R.Env.GoVersion}}</td></tr>
<tr><td>wrong results</td><td{{if .R.Errors}} class="bad"{{end}}>{{.R.Errors}}</td></tr>
</table>
<table id="phases">
<tr><th>phase</th><th>operations</th><th>seconds</th><th>operations/s</th></tr>
{{range .Phases}}<tr><td>{{.Name}}</td><td>{{.Ops}}</td><td>{{f1 .Seconds}}</td><td>{{si .OpsPerSec}}</td></tr>
{{end}}</table>
{{range .Phases}}
<h2>{{.Name}}</h2>
{{with .Rate}}<svg class="rate" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
<text x="70" y="18">{{.Title}}</text>
{{range .YTicks}}<line class="grid" x1="70" x2="700" y1="{{f1 .Pos}}" y2="{{f1 .Pos}}"/><text x="64" y="{{f1 .Pos}}" text-anchor="end" dominant-baseline="middle">{{.Label}}</text>
{{end}}{{range .XTicks}}<text x="{{f1 .Pos}}" y="240" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="70" x2="700" y1="220" y2="220"/><line class="axis" x1="70" x2="70" y1="30" y2="220"/>
<text x="385" y="256" text-anchor="middle">{{.XLabel}}</text>
<polyline class="line" points="{{.Points}}"/>
{{range .Dots}}<circle class="dot" cx="{{f1 .X}}" cy="{{f1 .Y}}" r="3"/>{{end}}
</svg>{{end}}
{{if .Latencies}}<table class="latency">
<tr><th>operation</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .Latencies}}<tr><td>{{.Op}}</td><td>{{.L.Count}}</td><td>{{dur .L.Mean}}</td><td>{{dur .L.P50}}</td><td>{{dur .L.P90}}</td><td>{{dur .L.P99}}</td><td>{{dur .L.P999}}</td><td>{{dur .L.Max}}</td></tr>
{{end}}</table>
{{range .Latencies}}{{with .Chart}}<svg class="latency" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
<text x="70" y="18">{{.Title}} (log scale)</text>
{{range .YTicks}}<line class="grid" x1="70" x2="700" y1="{{f1 .Pos}}" y2="{{f1 .Pos}}"/><text x="64" y="{{f1 .Pos}}" text-anchor="end" dominant-baseline="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="70" x2="700" y1="220" y2="220"/>
{{range .Bars}}<rect class="bar" x="{{f1 .X}}" y="{{f1 .Y}}" width="{{f1 .W}}" height="{{f1 .H}}"/><text x="{{f1 .X}}" y="{{f1 .Y}}" dy="-4">{{.Label}}</text><text x="{{f1 .X}}" y="238">{{.Name}}</text>
{{end}}</svg>{{end}}{{end}}{{end}}
{{end}}
</body>
</html>
`))
