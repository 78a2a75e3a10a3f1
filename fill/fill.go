// Package fill is a read-through cache's fill queue that never makes a
// reader wait: a miss is answered "not found" at once and its key is
// queued; a bounded pool of workers loads queued keys from the slow
// source (a Loader) and stores what it returns (a Store), so the next read
// of the key hits.
//
// What a Queue promises:
//   - Miss never blocks: it takes one mutex for a map lookup and a
//     non-blocking channel send. When the queue is full the key is dropped
//     and counted, not waited for.
//   - A key is loaded at most once at a time: misses for a key that is
//     queued, in flight or waiting to be retried are coalesced into it.
//   - A load the source answers with ErrNoData is remembered for
//     Options.NegativeTTL, during which misses for the key are not queued
//     (they are counted as negative hits).
//   - A failed load is retried after a backoff that doubles, at most
//     Options.Retries times, then counted as failed. Each attempt runs
//     under a context that times out after Options.Timeout.
//   - A write to the key (Invalidate) while its load is in flight makes
//     the load's result be discarded, so a loaded value never replaces one
//     a client wrote meanwhile nor brings back one it deleted (Store
//     checks this under the database's write lock).
//   - Memory is bounded: at most QueueSize keys wait, Workers load, and
//     NegativeMax keys are remembered as absent.
//
// The package knows nothing of the database: the engine (Options.Loader)
// and the server (--fill-url) each give it a Store that writes a loaded
// value only if the key is still absent.
package fill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoData is what a Loader returns when the source has no data for the
// key (HTTP 404). It is remembered for Options.NegativeTTL.
var ErrNoData = errors.New("fill: no such data")

// ErrClosed is returned by Close when called twice.
var ErrClosed = errors.New("fill: queue closed")

// ErrBadOptions: an option is out of range.
var ErrBadOptions = errors.New("fill: bad options")

// Loader loads key's value from the slow source. ttl is how long the value
// may be cached (zero: no expiry). It returns ErrNoData (possibly wrapped)
// when the source has none, and must return soon after ctx is done. key is
// owned by the queue and valid until Loader returns; value becomes the
// queue's (it is passed to Store and not kept after).
type Loader func(ctx context.Context, key []byte) (value []byte, ttl time.Duration, err error)

// Store writes a loaded value if the key is still absent and valid()
// reports true, and says whether it wrote. valid must be called under the
// lock that orders the store's writes to the key (the engine's write
// lock): a writer calls Invalidate before it takes that lock, so it either
// comes before the check (the load is discarded) or its write comes after
// the store's (and wins). key and value are valid until Store returns. An
// error counts the load as failed (not retried).
type Store func(key, value []byte, ttl time.Duration, valid func() bool) (stored bool, err error)

// Options configure a Queue. The zero value gives the defaults.
type Options struct {
	// Workers is how many loads run at once. Default 16.
	Workers int
	// QueueSize is how many keys may wait for a worker; misses beyond it
	// are dropped. Default 10000.
	QueueSize int
	// NegativeTTL is how long a key the source has no data for is not
	// queued again. Default 30s; negative: not remembered at all.
	NegativeTTL time.Duration
	// NegativeMax bounds how many such keys are remembered (the oldest is
	// forgotten first). Default 100000.
	NegativeMax int
	// Retries is how many times a failed load is retried. Default 2;
	// negative: none.
	Retries int
	// Backoff is the wait before the first retry; each later one waits
	// twice as long. Default 100ms.
	Backoff time.Duration
	// Timeout bounds each load attempt (through its context). Default 5s.
	Timeout time.Duration
}

// Defaults of Options.
const (
	DefaultWorkers     = 16
	DefaultQueueSize   = 10000
	DefaultNegativeTTL = 30 * time.Second
	DefaultNegativeMax = 100000
	DefaultRetries     = 2
	DefaultBackoff     = 100 * time.Millisecond
	DefaultTimeout     = 5 * time.Second
)

// maxWorkers and maxQueue bound the options: beyond them a queue is no
// longer a bounded amount of memory a user would choose.
const (
	maxWorkers = 1 << 14
	maxQueue   = 1 << 26
)

func (o Options) withDefaults() (Options, error) {
	if o.Workers < 0 || o.Workers > maxWorkers {
		return o, fmt.Errorf("%w: Workers %d (want 1 to %d)", ErrBadOptions, o.Workers, maxWorkers)
	}
	if o.QueueSize < 0 || o.QueueSize > maxQueue {
		return o, fmt.Errorf("%w: QueueSize %d (want 1 to %d)", ErrBadOptions, o.QueueSize, maxQueue)
	}
	if o.NegativeMax < 0 || o.NegativeMax > maxQueue {
		return o, fmt.Errorf("%w: NegativeMax %d (want 1 to %d)", ErrBadOptions, o.NegativeMax, maxQueue)
	}
	if o.Backoff < 0 || o.Timeout < 0 {
		return o, fmt.Errorf("%w: negative Backoff or Timeout", ErrBadOptions)
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.QueueSize == 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.NegativeMax == 0 {
		o.NegativeMax = DefaultNegativeMax
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.Backoff == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return o, nil
}

// Outcome is what Miss did with a key.
type Outcome int

const (
	// Queued: the key waits for a worker.
	Queued Outcome = iota
	// Coalesced: the key was already queued, in flight or waiting to be
	// retried.
	Coalesced
	// Negative: the source had no data for the key within NegativeTTL.
	Negative
	// Dropped: the queue was full.
	Dropped
	// Closed: the queue was closed.
	Closed
)

// String returns the outcome's name ("queued", "coalesced", ...).
func (o Outcome) String() string {
	switch o {
	case Queued:
		return "queued"
	case Coalesced:
		return "coalesced"
	case Negative:
		return "negative"
	case Dropped:
		return "dropped"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// job is one key from its first miss until its load is stored, found
// absent or given up. It is in Queue.pending for all that time.
type job struct {
	key      []byte
	queuedAt time.Time // when it last entered the channel
	attempt  int       // failed attempts so far
	// stale is set (under Queue.mu) by Invalidate: the key was written
	// after the miss, so the load's result must not be stored.
	stale bool
	// retry is the timer of a job waiting for its backoff (under
	// Queue.mu); Close stops it.
	retry *time.Timer
}

// Queue is a fill queue. Its methods may be called from any goroutine.
type Queue struct {
	load  Loader
	store Store
	opts  Options

	// mu guards pending, neg, negOrder and closed.
	mu sync.Mutex
	// pending holds every key queued, in flight or waiting for a retry.
	pending map[string]*job
	// neg maps a key the source had no data for to when that stops
	// counting (Unix nanoseconds); negOrder lists them oldest first (a
	// key's expiry is its insertion time plus NegativeTTL, so oldest
	// first is also soonest-expiring first). A key may be in negOrder
	// more than once after it was removed and added back; only the entry
	// whose time matches neg counts.
	neg      map[string]int64
	negOrder []negEntry
	negHead  int
	closed   bool

	ch     chan *job
	ctx    context.Context // cancelled by Close once its grace ends
	cancel context.CancelFunc
	// workers counts running worker goroutines.
	workers sync.WaitGroup

	c      counters
	waitH  *latencyHist // time from queueing to a worker taking the key
	loadH  *latencyHist // duration of each load attempt
	nowFn  func() time.Time
	closeO sync.Once
}

type negEntry struct {
	key string
	at  int64
}

// New starts a queue with its workers. Close stops them.
func New(load Loader, store Store, o Options) (*Queue, error) {
	if load == nil || store == nil {
		return nil, fmt.Errorf("%w: a Loader and a Store are required", ErrBadOptions)
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{
		load:    load,
		store:   store,
		opts:    o,
		pending: make(map[string]*job),
		neg:     make(map[string]int64),
		ch:      make(chan *job, o.QueueSize),
		ctx:     ctx,
		cancel:  cancel,
		waitH:   newLatencyHist(),
		loadH:   newLatencyHist(),
		nowFn:   time.Now,
	}
	q.workers.Add(o.Workers)
	for range o.Workers {
		go q.work()
	}
	return q, nil
}

// Options returns the options in effect (defaults filled in).
func (q *Queue) Options() Options { return q.opts }

// Miss reports a read of key that found nothing and queues the key unless
// it is already pending or known absent. It never blocks. key is copied.
func (q *Queue) Miss(key []byte) Outcome {
	now := q.nowFn()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return Closed
	}
	if _, ok := q.pending[string(key)]; ok {
		q.mu.Unlock()
		q.c.coalesced.Add(1)
		return Coalesced
	}
	if len(q.neg) > 0 {
		if until, ok := q.neg[string(key)]; ok {
			if now.UnixNano() < until {
				q.mu.Unlock()
				q.c.negative.Add(1)
				return Negative
			}
			delete(q.neg, string(key))
		}
	}
	j := &job{key: append([]byte(nil), key...), queuedAt: now}
	select {
	case q.ch <- j:
		q.pending[string(j.key)] = j
		q.mu.Unlock()
		q.c.queued.Add(1)
		return Queued
	default:
		q.mu.Unlock()
		q.c.dropped.Add(1)
		return Dropped
	}
}

// Invalidate tells the queue that key was written (set or deleted): a load
// of it in flight or waiting is discarded instead of stored, and a
// remembered "no data" for it is forgotten.
func (q *Queue) Invalidate(key []byte) {
	q.mu.Lock()
	if j, ok := q.pending[string(key)]; ok {
		j.stale = true
	}
	if len(q.neg) > 0 {
		delete(q.neg, string(key))
	}
	q.mu.Unlock()
}

// work runs one worker until Close.
func (q *Queue) work() {
	defer q.workers.Done()
	for {
		select {
		case j, ok := <-q.ch:
			if !ok {
				return
			}
			q.run(j)
		case <-q.ctx.Done():
			return
		}
	}
}

// run makes one load attempt for j and decides what follows: store,
// remember as absent, retry later or give up.
func (q *Queue) run(j *job) {
	// Count the load as in flight under mu, so that Close either sees it
	// (and waits for it) or has already marked the queue closed.
	q.mu.Lock()
	if q.closed {
		if q.pending[string(j.key)] == j {
			delete(q.pending, string(j.key))
		}
		q.mu.Unlock()
		q.c.abandoned.Add(1)
		return
	}
	q.c.inFlight.Add(1)
	q.mu.Unlock()
	start := q.nowFn()
	q.waitH.record(start.Sub(j.queuedAt))
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.Timeout)
	value, ttl, err := q.safeLoad(ctx, j.key)
	cancel()
	q.c.inFlight.Add(-1)
	q.loadH.record(q.nowFn().Sub(start))

	switch {
	case err == nil:
		if ttl < 0 {
			// Not to be stored: the next miss loads again.
			q.finish(j)
			q.c.uncacheable.Add(1)
			return
		}
		stored, serr := q.store(j.key, value, ttl, func() bool { return !q.isStale(j) })
		q.finish(j)
		switch {
		case serr != nil:
			q.c.failed.Add(1)
			q.c.storeErrors.Add(1)
		case stored:
			q.c.filled.Add(1)
		default:
			q.c.superseded.Add(1)
		}
	case errors.Is(err, ErrNoData):
		q.c.notFound.Add(1)
		q.mu.Lock()
		delete(q.pending, string(j.key))
		if !j.stale && q.opts.NegativeTTL > 0 && !q.closed {
			q.rememberAbsentLocked(string(j.key), q.nowFn().Add(q.opts.NegativeTTL).UnixNano())
		}
		q.mu.Unlock()
	default:
		if j.attempt >= q.opts.Retries || q.ctx.Err() != nil || q.isStale(j) {
			q.finish(j)
			q.c.failed.Add(1)
			return
		}
		q.retryLater(j)
	}
}

// safeLoad calls the Loader, turning a panic in it into an error so one
// bad key cannot stop a worker.
func (q *Queue) safeLoad(ctx context.Context, key []byte) (v []byte, ttl time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, ttl, err = nil, 0, fmt.Errorf("fill: loader panicked: %v", r)
		}
	}()
	return q.load(ctx, key)
}

func (q *Queue) isStale(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return j.stale
}

// finish removes j from pending: the next miss for its key queues it again.
func (q *Queue) finish(j *job) {
	q.mu.Lock()
	if q.pending[string(j.key)] == j {
		delete(q.pending, string(j.key))
	}
	q.mu.Unlock()
}

// retryLater puts j back in the channel after its backoff. The key stays
// pending meanwhile, so misses for it are coalesced. If the channel is
// full when the backoff ends the key is given up (counted as failed).
//
// At most QueueSize keys wait for a retry: past that a failed load is
// given up at once, so a source that fails fast cannot grow the set of
// pending keys without bound.
func (q *Queue) retryLater(j *job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.c.waitingRetry.Load() >= int64(q.opts.QueueSize) {
		if q.pending[string(j.key)] == j {
			delete(q.pending, string(j.key))
		}
		q.c.failed.Add(1)
		return
	}
	delay := q.opts.Backoff << j.attempt
	j.attempt++
	q.c.retried.Add(1)
	q.c.waitingRetry.Add(1)
	j.retry = time.AfterFunc(delay, func() {
		q.mu.Lock()
		if j.retry == nil {
			// Close stopped the retry but this call had already started.
			q.mu.Unlock()
			return
		}
		j.retry = nil
		q.c.waitingRetry.Add(-1)
		j.queuedAt = q.nowFn()
		select {
		case q.ch <- j:
			q.mu.Unlock()
		default:
			delete(q.pending, string(j.key))
			q.mu.Unlock()
			q.c.failed.Add(1)
		}
	})
}

// rememberAbsentLocked records key as absent until the Unix nanosecond
// until, forgetting expired and (past NegativeMax) the oldest entries.
func (q *Queue) rememberAbsentLocked(key string, until int64) {
	q.neg[key] = until
	q.negOrder = append(q.negOrder, negEntry{key, until})
	now := q.nowFn().UnixNano()
	for q.negHead < len(q.negOrder) {
		e := q.negOrder[q.negHead]
		cur, ok := q.neg[e.key]
		live := ok && cur == e.at
		if live && e.at > now && len(q.neg) <= q.opts.NegativeMax {
			break
		}
		if live {
			delete(q.neg, e.key)
		}
		q.negOrder[q.negHead] = negEntry{}
		q.negHead++
	}
	// Compact the order list once its dead prefix is most of it, so its
	// memory stays proportional to the live entries.
	if q.negHead > 1024 && q.negHead*2 > len(q.negOrder) {
		n := copy(q.negOrder, q.negOrder[q.negHead:])
		clear(q.negOrder[n:])
		q.negOrder = q.negOrder[:n]
		q.negHead = 0
	}
}

// Close stops taking misses and waits for the loads in flight to finish
// and store their results until ctx is done; then it cancels their
// contexts and waits for the workers to return. Keys still waiting in the
// queue or for a retry are abandoned (counted). Close returns ctx's error
// if the grace ended before the loads did.
func (q *Queue) Close(ctx context.Context) error {
	first := false
	q.closeO.Do(func() { first = true })
	if !first {
		return ErrClosed
	}
	q.mu.Lock()
	q.closed = true
	// Retries waiting for their backoff are abandoned now, not waited for.
	for k, j := range q.pending {
		if j.retry == nil {
			continue
		}
		j.retry.Stop()
		j.retry = nil
		q.c.waitingRetry.Add(-1)
		delete(q.pending, k)
		q.c.abandoned.Add(1)
	}
	q.mu.Unlock()
	// Take the waiting keys out of the channel so workers finish only what
	// they already hold.
	for drained := false; !drained; {
		select {
		case j := <-q.ch:
			q.finish(j)
			q.c.abandoned.Add(1)
		default:
			drained = true
		}
	}
	// Wait for the loads in flight, then stop the workers. If the grace
	// ends first, cancel the loads' contexts and return without waiting
	// for a Loader that ignores its context: its result will find the
	// store closed.
	var err error
	for q.c.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(time.Millisecond):
			continue
		}
		break
	}
	q.cancel()
	if err == nil {
		q.workers.Wait()
	}
	return err
}

// counters are the queue's event counts.
type counters struct {
	queued, coalesced, negative, dropped atomic.Uint64
	filled, notFound, failed, retried    atomic.Uint64
	superseded, uncacheable, abandoned   atomic.Uint64
	storeErrors                          atomic.Uint64
	inFlight, waitingRetry               atomic.Int64
}
