package bench

import (
	"fmt"
	"io"
	"time"

	"github.com/dustin/go-humanize"
)

// progress prints the phase's rate until stop closes: one redrawn line on
// a terminal, otherwise a line every 5 seconds.
func (r *runner) progress(name string, total int64, stop <-chan struct{}, done chan<- struct{}) {
	printProgress(progressSpec{out: r.cfg.Progress, terminal: r.cfg.Terminal, every: 5 * time.Second,
		name: name, total: total, duration: r.cfg.Duration, completed: r.completed}, stop, done)
}

// progressSpec says what printProgress reports and where.
type progressSpec struct {
	out       io.Writer // nil: print nothing
	terminal  bool      // out is a terminal: redraw one line every second
	every     time.Duration
	name      string
	total     int64         // operations in the phase, 0 if unknown
	duration  time.Duration // the phase's length if timed
	completed func() int64  // operations so far
	extra     func() string // appended to each line, if set
}

// printProgress prints a progress line at each interval until stop closes,
// then closes done.
func printProgress(p progressSpec, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if p.out == nil {
		<-stop
		return
	}
	every := p.every
	if p.terminal {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	start, last, lastN := time.Now(), time.Now(), int64(0)
	for {
		select {
		case <-stop:
			if p.terminal {
				fmt.Fprint(p.out, "\r\033[K")
			}
			return
		case now := <-t.C:
			n := p.completed()
			line := progressLine(p.name, n, n-lastN, now.Sub(last), now.Sub(start), p.total, p.duration)
			if p.extra != nil {
				line += p.extra()
			}
			last, lastN = now, n
			if p.terminal {
				fmt.Fprintf(p.out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(p.out, line)
			}
		}
	}
}

// progressLine formats one progress report: n operations so far, delta of
// them in the last interval; with a total, the share done and an estimate
// of the time left, else (a timed run phase) the time left.
func progressLine(name string, n, delta int64, interval, elapsed time.Duration, total int64, duration time.Duration) string {
	rate := float64(delta) / interval.Seconds()
	line := fmt.Sprintf("%s: %s ops, %s ops/s, %s elapsed", name,
		humanize.Comma(n), humanize.Comma(int64(rate)), elapsed.Round(time.Second))
	switch {
	case total > 0 && n > 0:
		eta := time.Duration(float64(elapsed) * float64(max(total-n, 0)) / float64(n))
		line += fmt.Sprintf(", %.0f%%, ETA %s", 100*float64(n)/float64(total), eta.Round(time.Second))
	case total == 0 && duration > 0:
		line += fmt.Sprintf(", %s left", max(duration-elapsed, 0).Round(time.Second))
	}
	return line
}
