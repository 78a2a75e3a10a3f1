package server

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/marlinkv/marlin/engine"
	marlinmetrics "github.com/marlinkv/marlin/metrics"
)

// Prometheus metrics (marlin serve --metrics): the figures "stats" reports,
// under memcached_exporter's names with a marlin_ prefix, the engine's own
// figures, and a latency histogram per command. Counters are not kept
// twice: a collector reads the server's atomic counters (stats) and the
// engine's Stats at scrape time. Only the histograms are updated as
// commands run (a few atomic adds, no allocation). The registry is the
// server's own, not the process-wide default.

// metricOp is the command a connection is running, for its latency
// histogram. The dispatch of each protocol sets it (conn.setOp); run
// observes the command's duration under it and resets it to mopOther,
// which also counts what no dispatch named (a line that does not parse,
// an unknown command).
type metricOp uint8

// The classic commands are mop* (op* are the binary opcodes); the meta
// commands are opM*, the names their dispatch uses.
const (
	mopOther metricOp = iota
	mopGet
	mopGets
	mopGat
	mopGats
	mopSet
	mopAdd
	mopReplace
	mopAppend
	mopPrepend
	mopCas
	mopTouch
	mopDelete
	mopIncr
	mopDecr
	mopFlushAll
	mopStats
	mopVersion
	mopVerbosity
	mopQuit
	mopNoop
	opMg
	opMs
	opMd
	opMa
	opMn
	opMe
	numMetricOps
)

// metricOpNames are the histogram's command label values.
var metricOpNames = [numMetricOps]string{
	mopOther: "other", mopGet: "get", mopGets: "gets", mopGat: "gat", mopGats: "gats",
	mopSet: "set", mopAdd: "add", mopReplace: "replace", mopAppend: "append", mopPrepend: "prepend",
	mopCas: "cas", mopTouch: "touch", mopDelete: "delete", mopIncr: "incr", mopDecr: "decr",
	mopFlushAll: "flush_all", mopStats: "stats", mopVersion: "version", mopVerbosity: "verbosity",
	mopQuit: "quit", mopNoop: "noop",
	opMg: "mg", opMs: "ms", opMd: "md", opMa: "ma", opMn: "mn", opMe: "me",
}

// setOp names the command the connection runs, for its latency histogram.
func (c *conn) setOp(op metricOp) { c.op = op }

// textOp is the histogram of a text command.
func textOp(k textKind) metricOp {
	switch k {
	case cmdGet:
		return mopGet
	case cmdGets:
		return mopGets
	case cmdGat:
		return mopGat
	case cmdGats:
		return mopGats
	case cmdSet:
		return mopSet
	case cmdAdd:
		return mopAdd
	case cmdReplace:
		return mopReplace
	case cmdAppend:
		return mopAppend
	case cmdPrepend:
		return mopPrepend
	case cmdCas:
		return mopCas
	case cmdTouch:
		return mopTouch
	case cmdDelete:
		return mopDelete
	case cmdIncr:
		return mopIncr
	case cmdDecr:
		return mopDecr
	case cmdFlushAll:
		return mopFlushAll
	case cmdStats:
		return mopStats
	case cmdVersion:
		return mopVersion
	case cmdVerbosity:
		return mopVerbosity
	case cmdQuit:
		return mopQuit
	}
	return mopOther
}

// metaOp is the histogram of a meta command, by the letter after its m.
func metaOp(code byte) metricOp {
	switch code {
	case 'g':
		return opMg
	case 's':
		return opMs
	case 'd':
		return opMd
	case 'a':
		return opMa
	case 'n':
		return opMn
	case 'e':
		return opMe
	}
	return mopOther
}

// binOps is the histogram of each binary opcode: a request counts under
// its text command's name (getq, getk and getkq as get; the gat variants
// as gat; quiet variants as their command); unknown opcodes as other.
var binOps = [256]metricOp{
	opGet: mopGet, opGetQ: mopGet, opGetK: mopGet, opGetKQ: mopGet,
	opGAT: mopGat, opGATQ: mopGat, opGATK: mopGat, opGATKQ: mopGat, opTouch: mopTouch,
	opSet: mopSet, opSetQ: mopSet, opAdd: mopAdd, opAddQ: mopAdd, opReplace: mopReplace, opReplaceQ: mopReplace,
	opAppend: mopAppend, opAppendQ: mopAppend, opPrepend: mopPrepend, opPrependQ: mopPrepend,
	opDelete: mopDelete, opDeleteQ: mopDelete,
	opIncrement: mopIncr, opIncrementQ: mopIncr, opDecrement: mopDecr, opDecrementQ: mopDecr,
	opFlush: mopFlushAll, opFlushQ: mopFlushAll, opStat: mopStats, opVersion: mopVersion,
	opQuit: mopQuit, opQuitQ: mopQuit, opNoop: mopNoop,
}

// latencyBuckets are the histograms' upper bounds in seconds: 10 µs to
// 1 s in steps of 1, 2.5, 5.
var latencyBuckets = [...]float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
	100e-3, 250e-3, 500e-3, 1,
}

// latencyBucketsNs are latencyBuckets in nanoseconds.
var latencyBucketsNs = func() (b [len(latencyBuckets)]int64) {
	for i, s := range latencyBuckets {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// latencyShard is one writer's latency histograms: per command, the
// count of each bucket (the last: over 1 s) and the sum. An event loop
// has a shard of its own, written by the goroutine serving the loop only,
// so its atomics never contend with another core's (a shared histogram
// cost 2 to 4% of the throughput under memcaslap); the connections with
// goroutines of their own share one. Scrapes add the shards up.
type latencyShard struct {
	counts [numMetricOps][len(latencyBuckets) + 1]atomic.Uint64
	sumNs  [numMetricOps]atomic.Uint64
}

// observe records one command's duration.
func (l *latencyShard) observe(op metricOp, d time.Duration) {
	if op >= numMetricOps {
		return
	}
	ns := max(int64(d), 0)
	i := 0
	for i < len(latencyBucketsNs) && ns > latencyBucketsNs[i] {
		i++
	}
	l.counts[op][i].Add(1)
	l.sumNs[op].Add(uint64(ns))
}

// metrics is a server's registry and latency histograms.
type metrics struct {
	reg    *prometheus.Registry
	shared latencyShard // the goroutine-per-connection connections'
	desc   *prometheus.Desc

	mu     sync.Mutex      // guards shards
	shards []*latencyShard // the loops' (shared is counted apart)
}

// newShard returns a latency shard for one event loop.
func (m *metrics) newShard() *latencyShard {
	l := new(latencyShard)
	m.mu.Lock()
	m.shards = append(m.shards, l)
	m.mu.Unlock()
	return l
}

// Describe and Collect make the latency histograms a collector: each
// command's histogram is the sum of the shards.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	shards := append([]*latencyShard{&m.shared}, m.shards...)
	m.mu.Unlock()
	for op, name := range metricOpNames {
		var counts [len(latencyBuckets) + 1]uint64
		var sum uint64
		for _, l := range shards {
			for i := range counts {
				counts[i] += l.counts[op][i].Load()
			}
			sum += l.sumNs[op].Load()
		}
		buckets := make(map[float64]uint64, len(latencyBuckets))
		var cum uint64
		for i, ub := range latencyBuckets {
			cum += counts[i]
			buckets[ub] = cum
		}
		cum += counts[len(latencyBuckets)]
		ch <- prometheus.MustNewConstHistogram(m.desc, cum, float64(sum)/1e9, buckets, name)
	}
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.desc = prometheus.NewDesc("marlin_command_duration_seconds",
		"Time a command took, from its first byte read to its reply buffered (a storage command's data block included; the reply's flush to the socket not).",
		[]string{"command"}, nil)
	m.reg.MustRegister(m, newStatsCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.fill != nil {
		m.reg.MustRegister(newFillCollector(s.fill))
	}
	return m
}

// MetricsHandler serves the server's metrics in Prometheus's exposition
// formats (marlin serve --metrics mounts it at /metrics).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slogAdapter{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// slogAdapter passes promhttp's errors to the server's logger.
type slogAdapter struct{ s *Server }

func (a slogAdapter) Println(v ...any) {
	a.s.log.Warn("marlin serve: metrics", "err", v)
}

// statsCollector reads the server's and the engine's counters at scrape
// time.
type statsCollector struct {
	s *Server

	up, pid, uptime, now, version, threads                    *prometheus.Desc
	maxConns, currConns, idleConns, totalConns, rejectedConns *prometheus.Desc
	commands, cmdGet, cmdSet, cmdTouch, cmdFlush              *prometheus.Desc
	currBytes, limitBytes, currItems, totalItems, evictions   *prometheus.Desc
	readBytes, writtenBytes                                   *prometheus.Desc
	engine                                                    []engineFigure
}

// engineFigure is one of db.Stats()'s figures.
type engineFigure struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(st *engine.Stats) float64
}

// engineFigures are db.Stats()'s figures, marlin_engine_*: counters since
// the database was opened, and gauges (package metrics lists them, for
// embedding programs too).
func engineFigures() []engineFigure {
	var fs []engineFigure
	for _, f := range marlinmetrics.Figures() {
		typ := prometheus.GaugeValue
		if f.Counter {
			typ = prometheus.CounterValue
		}
		fs = append(fs, engineFigure{prometheus.NewDesc("marlin_engine_"+f.Name, f.Help, nil, nil), typ, f.Value})
	}
	return fs
}

func newStatsCollector(s *Server) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("marlin_"+name, help, labels, nil)
	}
	c := &statsCollector{s: s,
		up:            d("up", "Whether the database answered its Stats call at this scrape (1) or not (0); the figures of items and bytes are missing when it did not."),
		pid:           d("pid", "Process id (stats pid)."),
		uptime:        d("uptime_seconds", "Seconds since the server started (stats uptime)."),
		now:           d("time_seconds", "The server's Unix time (stats time)."),
		version:       d("version", "The memcached version the server reports (stats version), as a label.", "version"),
		threads:       d("threads", "GOMAXPROCS: the threads that run Go code at once (stats threads)."),
		maxConns:      d("max_connections", "Most connections served at once (--max-conns; stats max_connections)."),
		currConns:     d("current_connections", "Open connections (stats curr_connections)."),
		idleConns:     d("idle_connections", "Open connections idle long enough to have given their buffers back (stats marlin_idle_connections)."),
		totalConns:    d("connections_total", "Connections accepted since the server started (stats total_connections)."),
		rejectedConns: d("connections_rejected_total", "Connections refused at the --max-conns limit (stats rejected_connections)."),
		commands: d("commands_total", "Commands by command and outcome, as memcached_exporter's memcached_commands_total: "+
			"get, delete, incr, decr, touch hit/miss; cas hit/miss/badval; set hit (cmd_set less the cas commands); flush hit (cmd_flush).",
			"command", "status"),
		cmdGet:       d("cmd_get_total", "Keys requested by get, gets, gat, gats and binary gets (stats cmd_get)."),
		cmdSet:       d("cmd_set_total", "Storage commands, cas included (stats cmd_set)."),
		cmdTouch:     d("cmd_touch_total", "Touches: touch, and each key of gat and gats (stats cmd_touch)."),
		cmdFlush:     d("cmd_flush_total", "flush_all commands (stats cmd_flush)."),
		currBytes:    d("current_bytes", "Bytes of the database's segment files (stats bytes)."),
		limitBytes:   d("limit_bytes", "What stats reports as limit_maxbytes: --max-disk, or else the segment files' bytes plus the file system's free bytes (items are bounded by the disk, not by memory)."),
		currItems:    d("current_items", "Items stored (stats curr_items)."),
		totalItems:   d("items_total", "Items stored since the server started (stats total_items)."),
		evictions:    d("items_evicted_total", "Items evicted with the oldest segments to stay under --max-disk (stats evictions; 0 without it)."),
		readBytes:    d("read_bytes_total", "Bytes read from clients (stats bytes_read)."),
		writtenBytes: d("written_bytes_total", "Bytes written to clients (stats bytes_written)."),
	}
	c.engine = engineFigures()
	return c
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.pid, c.uptime, c.now, c.version, c.threads,
		c.maxConns, c.currConns, c.idleConns, c.totalConns, c.rejectedConns,
		c.commands, c.cmdGet, c.cmdSet, c.cmdTouch, c.cmdFlush,
		c.currBytes, c.limitBytes, c.currItems, c.totalItems, c.evictions, c.readBytes, c.writtenBytes} {
		ch <- d
	}
	for _, f := range c.engine {
		ch <- f.desc
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	st := s.totals()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	now := time.Now()
	s.mu.Lock()
	curr := len(s.conns)
	s.mu.Unlock()
	gauge(c.pid, float64(pid))
	gauge(c.uptime, now.Sub(st.started).Seconds())
	gauge(c.now, float64(now.UnixNano())/1e9)
	gauge(c.version, 1, s.cfg.Version)
	gauge(c.threads, float64(runtime.GOMAXPROCS(0)))
	gauge(c.maxConns, float64(s.cfg.MaxConns))
	gauge(c.currConns, float64(curr))
	gauge(c.idleConns, float64(s.idleConnections()))
	counter(c.totalConns, st.totalConns.Load())
	counter(c.rejectedConns, st.rejectedConns.Load())

	casHits, casMisses, casBadval := st.casHits.Load(), st.casMisses.Load(), st.casBadval.Load()
	cmdSet := st.cmdSet.Load()
	for _, f := range []struct {
		cmd, status string
		v           int64
	}{
		{"get", "hit", st.getHits.Load()}, {"get", "miss", st.getMisses.Load()},
		{"delete", "hit", st.deleteHits.Load()}, {"delete", "miss", st.deleteMisses.Load()},
		{"incr", "hit", st.incrHits.Load()}, {"incr", "miss", st.incrMisses.Load()},
		{"decr", "hit", st.decrHits.Load()}, {"decr", "miss", st.decrMisses.Load()},
		{"cas", "hit", casHits}, {"cas", "miss", casMisses}, {"cas", "badval", casBadval},
		{"touch", "hit", st.touchHits.Load()}, {"touch", "miss", st.touchMisses.Load()},
		{"set", "hit", max(cmdSet-casHits-casMisses-casBadval, 0)},
		{"flush", "hit", st.cmdFlush.Load()},
	} {
		counter(c.commands, f.v, f.cmd, f.status)
	}
	counter(c.cmdGet, st.cmdGet.Load())
	counter(c.cmdSet, cmdSet)
	counter(c.cmdTouch, st.cmdTouch.Load())
	counter(c.cmdFlush, st.cmdFlush.Load())
	counter(c.totalItems, cmdSet)
	counter(c.readBytes, st.bytesRead.Load())
	counter(c.writtenBytes, st.bytesWritten.Load())

	es, items, err := s.dbStats()
	if err != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.currBytes, float64(es.LiveBytes))
	gauge(c.limitBytes, float64(s.limitBytes(es)))
	gauge(c.currItems, float64(items))
	counter(c.evictions, es.Evictions)
	for _, f := range c.engine {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, f.value(&es))
	}
}
