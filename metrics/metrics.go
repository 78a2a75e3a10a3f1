// Package metrics publishes an engine.DB's Stats for monitoring: as a
// Prometheus collector (metric names marlin_engine_*) and as an expvar
// variable, so that a program embedding Marlin adds one line:
//
//	prometheus.MustRegister(metrics.NewCollector(db))
//	metrics.Publish("marlin", db) // /debug/vars
//
// Each scrape or read calls db.Stats() once. The engine does not import
// this package (nor Prometheus); marlin serve's /metrics uses the same
// figures (Figures).
package metrics

import (
	"expvar"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marlinkv/marlin/engine"
)

// Collector is a prometheus.Collector of one database's figures.
type Collector struct {
	db    *engine.DB
	descs []*prometheus.Desc // parallel to Figures()
	up    *prometheus.Desc
}

// NewCollector returns a collector of db's figures. labels, if given,
// are constant labels of every metric (say, {"db": "sessions"} when a
// program registers several databases).
func NewCollector(db *engine.DB, labels prometheus.Labels) *Collector {
	c := &Collector{db: db,
		up: prometheus.NewDesc("marlin_engine_up", "Whether the database answered its Stats call at this scrape (1: the other figures follow) or not (0: closed).", nil, labels)}
	for _, f := range Figures() {
		c.descs = append(c.descs, prometheus.NewDesc("marlin_engine_"+f.Name, f.Help, nil, labels))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.db.Stats()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for i, f := range Figures() {
		typ := prometheus.GaugeValue
		if f.Counter {
			typ = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], typ, f.Value(&st))
	}
}

// Publish makes db's figures the expvar variable name: a JSON object of
// every figure by its name ({"keys": 1000, "puts_total": 1000, ...}, or
// {"error": "..."} when Stats fails, say after Close). Like
// expvar.Publish, it panics if name is already published: call it once
// per name.
func Publish(name string, db *engine.DB) {
	expvar.Publish(name, expvar.Func(func() any { return Snapshot(db) }))
}

// Snapshot returns db's figures by name (what Publish shows).
func Snapshot(db *engine.DB) map[string]any {
	st, err := db.Stats()
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	m := make(map[string]any, len(Figures()))
	for _, f := range Figures() {
		m[f.Name] = f.Value(&st)
	}
	return m
}
