package bench

import (
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
)

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
			n := r.completed()
			line := progressLine(name, n, n-lastN, now.Sub(last), now.Sub(start), total, r.cfg.Duration)
			last, lastN = now, n
			if r.cfg.Terminal {
				fmt.Fprintf(out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(out, line)
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
