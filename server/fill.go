package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/fill"
)

// Read-through without waiting (Config.Loader, marlin serve --fill-url):
// a get, gets, gat, gats, mg or binary get that misses answers at once as
// memcached would (END, EN, Not found) and queues the canonical key with
// a fill.Queue; its workers call the Loader and store what it returns as
// an item with flags 0 and the loader's TTL, unless a client stored or
// deleted the key meanwhile. Every command that writes goes through
// Server.update, which tells the queue first (Invalidate); the fill's own
// store checks under the database's write lock (fill.Store).

// startFill starts the fill queue if Config.Loader is set.
func (s *Server) startFill() error {
	if s.cfg.Loader == nil {
		return nil
	}
	q, err := fill.New(s.cfg.Loader, s.fillStore, s.cfg.Fill)
	if err != nil {
		return err
	}
	s.fill = q
	return nil
}

// stopFill closes the fill queue: loads in flight get until ctx is done
// to finish and be stored.
func (s *Server) stopFill(ctx context.Context) {
	if s.fill == nil {
		return
	}
	if err := s.fill.Close(ctx); err != nil && err != fill.ErrClosed {
		s.log.Warn("fill queue: loads still running at shutdown", "err", err)
	}
}

// missed queues key (canonical) after a read found no item. A mg that
// creates the item (N) does not call it.
func (s *Server) missed(key []byte) {
	if s.fill != nil {
		s.fill.Miss(key)
	}
}

// fillStore is the fill queue's Store: an item with flags 0 holding value,
// written only if no item exists and valid() holds under the write lock.
func (s *Server) fillStore(key, value []byte, ttl time.Duration, valid func() bool) (bool, error) {
	if len(value) > s.cfg.MaxItemSize {
		return false, errTooLarge
	}
	var expiry time.Time
	if ttl > 0 {
		expiry = time.Now().Add(ttl)
	}
	stored := false
	err := s.apply(key, func(cur *curItem, next uint64) (engine.Change, error) {
		stored = false
		if cur.found || !valid() {
			return engine.Change{Op: engine.Keep}, nil
		}
		stored = true
		h := itemHdr{cas: next}
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(value))), h, value), Expiry: expiry}, nil
	})
	if err != nil {
		return false, err
	}
	return stored, nil
}

// fillStatLines appends the fill queue's "stats" lines (none without a
// queue).
func (s *Server) fillStatLines(stat func(name string, v int64)) {
	if s.fill == nil {
		return
	}
	f := s.fill.Stats()
	for _, l := range []struct {
		name string
		v    uint64
	}{
		{"fill_queued", f.Queued}, {"fill_coalesced", f.Coalesced}, {"fill_negative_hits", f.Negative},
		{"fill_dropped", f.Dropped}, {"fill_filled", f.Filled}, {"fill_not_found", f.NotFound},
		{"fill_failed", f.Failed}, {"fill_retried", f.Retried}, {"fill_superseded", f.Superseded},
		{"fill_uncacheable", f.Uncacheable}, {"fill_abandoned", f.Abandoned}, {"fill_store_errors", f.StoreErrors},
	} {
		stat(l.name, int64(l.v))
	}
	stat("fill_pending", int64(f.Pending))
	stat("fill_queue_depth", int64(f.QueueDepth))
	stat("fill_in_flight", int64(f.InFlight))
	stat("fill_waiting_retry", int64(f.WaitingRetry))
	us := func(d time.Duration) int64 { return d.Microseconds() }
	stat("fill_wait_p50_us", us(f.Wait.P50))
	stat("fill_wait_p99_us", us(f.Wait.P99))
	stat("fill_load_p50_us", us(f.Load.P50))
	stat("fill_load_p99_us", us(f.Load.P99))
	stat("fill_load_max_us", us(f.Load.Max))
}

// fillCollector exports the fill queue's figures to Prometheus.
type fillCollector struct {
	q                            *fill.Queue
	events, gauges, wait, loadSD *prometheus.Desc
}

func newFillCollector(q *fill.Queue) *fillCollector {
	return &fillCollector{
		q: q,
		events: prometheus.NewDesc("marlin_fill_events_total",
			"Fill queue events: misses queued, coalesced, negative (source had no data lately), dropped (queue full); loads filled, not_found, failed, retried, superseded (key written meanwhile), uncacheable, abandoned (at shutdown), store_errors.",
			[]string{"event"}, nil),
		gauges: prometheus.NewDesc("marlin_fill_keys",
			"Keys in the fill queue now, by state: pending (all), queued (waiting for a worker), in_flight, waiting_retry.",
			[]string{"state"}, nil),
		wait: prometheus.NewDesc("marlin_fill_queue_wait_seconds",
			"Time keys waited in the fill queue for a worker.", nil, nil),
		loadSD: prometheus.NewDesc("marlin_fill_load_seconds",
			"Duration of each load attempt.", nil, nil),
	}
}

func (c *fillCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.events
	ch <- c.gauges
	ch <- c.wait
	ch <- c.loadSD
}

func (c *fillCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.q.Stats()
	for _, e := range []struct {
		name string
		v    uint64
	}{
		{"queued", f.Queued}, {"coalesced", f.Coalesced}, {"negative", f.Negative}, {"dropped", f.Dropped},
		{"filled", f.Filled}, {"not_found", f.NotFound}, {"failed", f.Failed}, {"retried", f.Retried},
		{"superseded", f.Superseded}, {"uncacheable", f.Uncacheable}, {"abandoned", f.Abandoned},
		{"store_errors", f.StoreErrors},
	} {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(e.v), e.name)
	}
	for _, g := range []struct {
		name string
		v    int
	}{{"pending", f.Pending}, {"queued", f.QueueDepth}, {"in_flight", f.InFlight}, {"waiting_retry", f.WaitingRetry}} {
		ch <- prometheus.MustNewConstMetric(c.gauges, prometheus.GaugeValue, float64(g.v), g.name)
	}
	summary := func(d *prometheus.Desc, l fill.Latency) {
		ch <- prometheus.MustNewConstSummary(d, uint64(l.Count), l.Sum.Seconds(), map[float64]float64{
			0.5: l.P50.Seconds(), 0.99: l.P99.Seconds(), 0.999: l.P999.Seconds(), 1: l.Max.Seconds(),
		})
	}
	summary(c.wait, f.Wait)
	summary(c.loadSD, f.Load)
}
