package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progressLine redraws a one-line status on stderr every half second
// while a long command runs, if stderr is a terminal and not quiet;
// otherwise it prints nothing (a script's log gets no carriage returns).
// status is called from the ticker's goroutine. stop erases the line.
func progressLine(stderr io.Writer, quiet bool, status func(elapsed time.Duration) string) (stop func()) {
	if quiet || !isTerminal(stderr) {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(stderr, "\r\x1b[K")
				return
			case <-t.C:
				fmt.Fprintf(stderr, "\r%s\x1b[K", status(time.Since(start)))
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// eta estimates the time left when done of total took elapsed.
func eta(done, total int64, elapsed time.Duration) string {
	if done <= 0 || total <= done {
		return "?"
	}
	return (time.Duration(float64(elapsed) * float64(total-done) / float64(done))).Round(time.Second).String()
}
