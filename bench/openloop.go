package bench

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// An open-loop reader: clients send gets on a fixed schedule (rate per
// second, all clients together) whatever the replies take, as real
// traffic does, and each get's latency lands in the slot of the second it
// was sent in. A slow reply therefore cannot hide the ones that queue
// behind it (coordinated omission): a client that falls behind sends at
// once and MaxLag says by how much. The fill, expire and evict workloads
// run on it.

// loopSlot accumulates one second of every client's gets.
type loopSlot struct {
	mu       sync.Mutex // guards all
	all      *Histogram
	requests int64
	hits     int64
}

// openLoop is one run of open-loop gets.
type openLoop struct {
	rate, clients int
	dur           time.Duration
	seed          uint64
	keySize       int
	next          func(rng *rand.Rand) uint64           // the next key id
	get           func(dst, key []byte) ([]byte, error) // one get
	// tick, if set, runs once a second (i counts from 0) while the
	// clients run, and once more at the end for a second the ticker missed.
	tick func(i int)

	slots      []loopSlot // one per second; a get past the end counts in the last
	hit, miss  []*Histogram
	errs       atomic.Int64
	maxLag     atomic.Int64
	start      time.Time
	elapsed    time.Duration
	secs, took int
}

// run sends the gets and returns when the duration is over.
func (l *openLoop) run() {
	l.secs = int(l.dur / time.Second)
	l.slots = make([]loopSlot, l.secs+1)
	for i := range l.slots {
		l.slots[i].all = NewHistogram()
	}
	l.hit, l.miss = make([]*Histogram, l.clients), make([]*Histogram, l.clients)
	l.start = time.Now()
	end := l.start.Add(l.dur)
	// interval is each client's time between gets, in nanoseconds.
	interval := float64(time.Second) * float64(l.clients) / float64(l.rate)
	var wg sync.WaitGroup
	for c := range l.clients {
		l.hit[c], l.miss[c] = NewHistogram(), NewHistogram()
		wg.Go(func() { l.client(c, interval, end) })
	}
	stop := make(chan struct{})
	ticked := make(chan int)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		i := 0
		defer func() { ticked <- i }()
		for ; i < l.secs; i++ {
			select {
			case <-t.C:
			case <-stop:
				return
			}
			if l.tick != nil {
				l.tick(i)
			}
		}
	}()
	wg.Wait()
	l.elapsed = time.Since(l.start)
	close(stop)
	if l.took = <-ticked; l.took < l.secs && l.tick != nil {
		// The last tick raced the end of the run.
		l.tick(l.took)
	}
	// Gets that ran past the last second boundary count in it.
	if l.secs > 0 {
		last, over := &l.slots[l.secs-1], &l.slots[l.secs]
		last.all.Merge(over.all)
		last.requests += over.requests
		last.hits += over.hits
	}
}

func (l *openLoop) client(c int, interval float64, end time.Time) {
	rng := rand.New(rand.NewPCG(l.seed, uint64(c)+1))
	hh, mh := l.hit[c], l.miss[c]
	cur, local := 0, NewHistogram()
	var req, hits int64
	flush := func() {
		s := &l.slots[min(cur, l.secs)]
		s.mu.Lock()
		s.all.Merge(local)
		s.requests += req
		s.hits += hits
		s.mu.Unlock()
		local, req, hits = NewHistogram(), 0, 0
	}
	var kbuf, vbuf []byte
	// Clients start spread over one interval.
	offset := interval * float64(c) / float64(l.clients)
	for i := 0; ; i++ {
		intended := l.start.Add(time.Duration(offset + float64(i)*interval))
		if !intended.Before(end) {
			break
		}
		if wait := time.Until(intended); wait > 100*time.Microsecond {
			time.Sleep(wait)
		}
		kbuf = Key(kbuf, l.next(rng), l.keySize)
		t0 := time.Now()
		var err error
		vbuf, err = l.get(vbuf[:0], kbuf)
		d := time.Since(t0)
		if lag := int64(t0.Sub(intended)); lag > l.maxLag.Load() {
			l.maxLag.Store(lag)
		}
		if sec := int(t0.Sub(l.start) / time.Second); sec != cur {
			flush()
			cur = sec
		}
		local.Record(d)
		req++
		switch {
		case err == nil:
			hits++
			hh.Record(d)
		case errors.Is(err, engine.ErrNotFound):
			mh.Record(d)
		default:
			l.errs.Add(1)
			mh.Record(d)
		}
	}
	flush()
}

// second returns second i's requests, hits and latency summary.
func (l *openLoop) second(i int) (requests, hits int64, sum Latency) {
	s := &l.slots[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.hits, s.all.Summary()
}

// hitRate is second i's share of hits so far (for progress lines).
func (l *openLoop) hitRate(i int) float64 {
	s := &l.slots[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.requests == 0 {
		return 0
	}
	return float64(s.hits) / float64(s.requests)
}

// totals returns the latencies of all gets, the hits and the misses.
func (l *openLoop) totals() (all, hit, miss Latency) {
	hit, _ = MergeSummaries(l.hit)
	miss, _ = MergeSummaries(l.miss)
	all, _ = MergeSummaries(append(append([]*Histogram{}, l.hit...), l.miss...))
	return all, hit, miss
}
