package fill

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Stats are a queue's counts since New. Every count only grows, except
// the gauges Pending, InFlight and WaitingRetry.
type Stats struct {
	// Queued: misses that queued their key.
	Queued uint64
	// Coalesced: misses for a key already pending.
	Coalesced uint64
	// Negative: misses not queued because the source had no data for the
	// key within NegativeTTL.
	Negative uint64
	// Dropped: misses not queued because the queue was full.
	Dropped uint64
	// Filled: loads stored.
	Filled uint64
	// NotFound: loads the source answered with ErrNoData.
	NotFound uint64
	// Failed: keys given up after their retries (or whose Store failed,
	// also counted in StoreErrors).
	Failed uint64
	// Retried: failed attempts that were retried.
	Retried uint64
	// Superseded: loads not stored because the key was written meanwhile
	// (or is present).
	Superseded uint64
	// Uncacheable: loads that returned a negative TTL (nothing stored).
	Uncacheable uint64
	// Abandoned: keys still waiting when the queue closed.
	Abandoned uint64
	// StoreErrors: loads whose Store returned an error.
	StoreErrors uint64

	// Pending: keys queued, in flight or waiting for a retry, now.
	Pending int
	// QueueDepth: keys waiting for a worker, now.
	QueueDepth int
	// InFlight: loads running now.
	InFlight int
	// WaitingRetry: keys waiting for their retry's backoff, now.
	WaitingRetry int

	// Wait is the time keys waited in the queue for a worker; Load the
	// duration of load attempts.
	Wait, Load Latency
}

// Latency summarizes a histogram of durations.
type Latency struct {
	Count int64         // durations recorded
	Sum   time.Duration // of every duration recorded
	P50   time.Duration // median
	P99   time.Duration // 99th percentile
	Max   time.Duration // the longest
	P999  time.Duration // 99.9th percentile
}

// Sub returns the counts of s minus those of old (the gauges and the
// latencies are s's own): the activity between two calls of Stats.
func (s Stats) Sub(old Stats) Stats {
	d := s
	d.Queued -= old.Queued
	d.Coalesced -= old.Coalesced
	d.Negative -= old.Negative
	d.Dropped -= old.Dropped
	d.Filled -= old.Filled
	d.NotFound -= old.NotFound
	d.Failed -= old.Failed
	d.Retried -= old.Retried
	d.Superseded -= old.Superseded
	d.Uncacheable -= old.Uncacheable
	d.Abandoned -= old.Abandoned
	d.StoreErrors -= old.StoreErrors
	return d
}

// Stats returns the queue's counts now.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	pending := len(q.pending)
	q.mu.Unlock()
	return Stats{
		Queued:       q.c.queued.Load(),
		Coalesced:    q.c.coalesced.Load(),
		Negative:     q.c.negative.Load(),
		Dropped:      q.c.dropped.Load(),
		Filled:       q.c.filled.Load(),
		NotFound:     q.c.notFound.Load(),
		Failed:       q.c.failed.Load(),
		Retried:      q.c.retried.Load(),
		Superseded:   q.c.superseded.Load(),
		Uncacheable:  q.c.uncacheable.Load(),
		Abandoned:    q.c.abandoned.Load(),
		StoreErrors:  q.c.storeErrors.Load(),
		Pending:      pending,
		QueueDepth:   len(q.ch),
		InFlight:     int(q.c.inFlight.Load()),
		WaitingRetry: int(q.c.waitingRetry.Load()),
		Wait:         q.waitH.summary(),
		Load:         q.loadH.summary(),
	}
}

// latencyHist is a mutex-guarded histogram of durations from 1µs to 10
// minutes at 2 significant digits (about 20 KiB). Workers record into it
// once per load, so the lock is never hot.
type latencyHist struct {
	mu  sync.Mutex // guards h and sum
	h   *hdrhistogram.Histogram
	sum time.Duration
}

func newLatencyHist() *latencyHist {
	return &latencyHist{h: hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 2)}
}

func (l *latencyHist) record(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	l.mu.Lock()
	l.sum += d
	_ = l.h.RecordValue(min(us, l.h.HighestTrackableValue()))
	l.mu.Unlock()
}

func (l *latencyHist) summary() Latency {
	l.mu.Lock()
	defer l.mu.Unlock()
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Latency{
		Count: l.h.TotalCount(),
		Sum:   l.sum,
		P50:   us(l.h.ValueAtQuantile(50)),
		P99:   us(l.h.ValueAtQuantile(99)),
		P999:  us(l.h.ValueAtQuantile(99.9)),
		Max:   us(l.h.Max()),
	}
}
