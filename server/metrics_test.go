package server

import (
	"bufio"
	"encoding/binary"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

// scrape fetches url and parses it with Prometheus's own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// metricValue is the value of the sample of name whose labels include
// labels (name=value pairs); it fails the test if there is not exactly one.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := findMetric(t, fams, name, labels...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

func findMetric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "no metric %s", name)
	var found []*dto.Metric
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "%s%v", name, labels)
	return found[0]
}

// TestMetrics runs known commands over the text and binary protocols,
// scrapes /metrics over HTTP and checks every counter and the latency
// histograms' counts exactly, and that "stats" and /metrics agree.
func TestMetrics(t *testing.T) {
	addr, s, _ := startServer(t, "", Config{})
	hs := httptest.NewServer(s.MetricsHandler())
	defer hs.Close()
	url := hs.URL + "/metrics"

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	line := func() string {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		return l
	}
	// do sends one command and returns its reply: n lines, or up to END.
	do := func(cmd string, n int) string {
		t.Helper()
		_, err := io.WriteString(c, cmd)
		require.NoError(t, err)
		var out strings.Builder
		for i := 0; n < 0 || i < n; i++ {
			l := line()
			out.WriteString(l)
			if n < 0 && l == "END\r\n" {
				break
			}
		}
		return out.String()
	}
	// flush_all first, on the empty database: it hides nothing the
	// figures below count.
	require.Equal(t, "OK\r\n", do("flush_all\r\n", 1))
	require.Equal(t, "STORED\r\n", do("set a 0 0 1\r\nx\r\n", 1))
	require.Equal(t, "STORED\r\n", do("set b 0 0 2\r\nyy\r\n", 1))
	require.Equal(t, "STORED\r\n", do("set n 0 0 2\r\n10\r\n", 1))
	require.Equal(t, "VALUE a 0 1\r\nx\r\nEND\r\n", do("get a\r\n", -1))
	require.Equal(t, "END\r\n", do("get nope\r\n", -1))
	require.Equal(t, "VALUE a 0 1\r\nx\r\nVALUE b 0 2\r\nyy\r\nEND\r\n", do("get a b nope2\r\n", -1))
	require.Equal(t, "DELETED\r\n", do("delete a\r\n", 1))
	require.Equal(t, "NOT_FOUND\r\n", do("delete a\r\n", 1))
	require.Equal(t, "15\r\n", do("incr n 5\r\n", 1))
	require.Equal(t, "NOT_FOUND\r\n", do("incr nope 1\r\n", 1))
	require.Equal(t, "0\r\n", do("decr n 20\r\n", 1))
	require.Equal(t, "NOT_FOUND\r\n", do("decr nope 1\r\n", 1))
	require.Equal(t, "TOUCHED\r\n", do("touch b 100\r\n", 1))
	require.Equal(t, "NOT_FOUND\r\n", do("touch nope 100\r\n", 1))
	m := casRe.FindStringSubmatch(strings.Split(do("gets b\r\n", -1), "\n")[0])
	require.NotNil(t, m)
	require.Equal(t, "STORED\r\n", do("cas b 0 0 1 "+m[2]+"\r\nz\r\n", 1))
	require.Equal(t, "EXISTS\r\n", do("cas b 0 0 1 "+m[2]+"\r\nw\r\n", 1))
	require.Equal(t, "NOT_FOUND\r\n", do("cas nope 0 0 1 1\r\nv\r\n", 1))
	require.Equal(t, "ERROR\r\n", do("bogus\r\n", 1))
	require.Equal(t, "VERSION 1.6.18\r\n", do("version\r\n", 1))
	// A binary get (a hit) and a noop on the same connection.
	_, err = c.Write(append(binRequest(opGet, []byte("b"), nil, nil, 0), binRequest(opNoop, nil, nil, nil, 0)...))
	require.NoError(t, err)
	for _, want := range []string{"\x00\x00\x00\x00z", ""} { // flags, value; nothing
		h := make([]byte, binHeader)
		_, err = io.ReadFull(r, h)
		require.NoError(t, err)
		body := make([]byte, binary.BigEndian.Uint32(h[8:]))
		_, err = io.ReadFull(r, body)
		require.NoError(t, err)
		require.Equal(t, want, string(body))
	}
	// Meta commands: a hit and a no-op.
	require.Equal(t, "VA 1\r\nz\r\n", do("mg b v\r\n", 2))
	require.Equal(t, "MN\r\n", do("mn\r\n", 1))

	// stats over the text protocol, then /metrics: nothing runs between
	// them but the stats command's own reply.
	stats := do("stats\r\n", -1)
	fams := scrape(t, url)
	val := func(name string, labels ...string) float64 {
		t.Helper()
		return metricValue(t, fams, name, labels...)
	}

	// The counters, exactly.
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"marlin_commands_total", []string{"command", "get", "status", "hit"}, 6}, // a; a b; binary b; mg b
		{"marlin_commands_total", []string{"command", "get", "status", "miss"}, 2},
		{"marlin_commands_total", []string{"command", "delete", "status", "hit"}, 1},
		{"marlin_commands_total", []string{"command", "delete", "status", "miss"}, 1},
		{"marlin_commands_total", []string{"command", "incr", "status", "hit"}, 1},
		{"marlin_commands_total", []string{"command", "incr", "status", "miss"}, 1},
		{"marlin_commands_total", []string{"command", "decr", "status", "hit"}, 1},
		{"marlin_commands_total", []string{"command", "decr", "status", "miss"}, 1},
		{"marlin_commands_total", []string{"command", "touch", "status", "hit"}, 1},
		{"marlin_commands_total", []string{"command", "touch", "status", "miss"}, 1},
		{"marlin_commands_total", []string{"command", "cas", "status", "hit"}, 1},
		{"marlin_commands_total", []string{"command", "cas", "status", "miss"}, 1},
		{"marlin_commands_total", []string{"command", "cas", "status", "badval"}, 1},
		{"marlin_commands_total", []string{"command", "set", "status", "hit"}, 3},
		{"marlin_commands_total", []string{"command", "flush", "status", "hit"}, 1},
		{"marlin_cmd_get_total", nil, 8},
		{"marlin_cmd_set_total", nil, 6},
		{"marlin_cmd_touch_total", nil, 2},
		{"marlin_cmd_flush_total", nil, 1},
		{"marlin_items_total", nil, 6},
		{"marlin_items_evicted_total", nil, 0},
		{"marlin_connections_total", nil, 1},
		{"marlin_connections_rejected_total", nil, 0},
		{"marlin_current_connections", nil, 1},
		{"marlin_idle_connections", nil, 1}, // an event loop's connection holds no buffers between commands
		{"marlin_max_connections", nil, defaultMaxConns},
		{"marlin_up", nil, 1},
		{"marlin_pid", nil, float64(pid)},
	} {
		require.Equal(t, w.want, val(w.name, w.labels...), "%s%v", w.name, w.labels)
	}
	require.Equal(t, float64(1), val("marlin_version", "version", "1.6.18"))

	// The latency histograms: one observation per command, by name.
	for cmd, want := range map[string]uint64{
		"get": 4, "gets": 1, "set": 3, "delete": 2, "incr": 2, "decr": 2, "touch": 2, "cas": 3,
		"flush_all": 1, "stats": 1, "version": 1, "noop": 1, "other": 1,
		"mg": 1, "mn": 1, "add": 0, "gat": 0, "ms": 0, "md": 0,
	} {
		h := findMetric(t, fams, "marlin_command_duration_seconds", "command", cmd).GetHistogram()
		require.NotNil(t, h, cmd)
		require.Equal(t, want, h.GetSampleCount(), "%s commands", cmd)
		checkBuckets(t, cmd, h)
	}

	// stats and /metrics agree: every figure of stats has its metric.
	agree := map[string]string{
		"pid": "marlin_pid", "max_connections": "marlin_max_connections",
		"curr_connections": "marlin_current_connections", "total_connections": "marlin_connections_total",
		"rejected_connections": "marlin_connections_rejected_total",
		"cmd_get":              "marlin_cmd_get_total", "cmd_set": "marlin_cmd_set_total",
		"cmd_flush": "marlin_cmd_flush_total", "cmd_touch": "marlin_cmd_touch_total",
		"bytes_read": "marlin_read_bytes_total", "limit_maxbytes": "marlin_limit_bytes",
		"threads": "marlin_threads", "bytes": "marlin_current_bytes", "curr_items": "marlin_current_items",
		"total_items": "marlin_items_total", "evictions": "marlin_items_evicted_total",
		"marlin_index_bytes": "marlin_engine_index_resident_bytes", "marlin_idle_connections": "marlin_idle_connections",
	}
	for _, op := range []string{"get", "delete", "incr", "decr", "cas", "touch"} {
		agree[op+"_hits"] = "marlin_commands_total command=" + op + " status=hit"
		agree[op+"_misses"] = "marlin_commands_total command=" + op + " status=miss"
	}
	agree["cas_badval"] = "marlin_commands_total command=cas status=badval"
	seen := 0
	for _, l := range strings.Split(strings.TrimSuffix(stats, "END\r\n"), "\r\n") {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		require.Len(t, f, 3, l)
		name, v := f[1], f[2]
		n, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "version":
			require.Equal(t, float64(1), val("marlin_version", "version", v))
		case "pointer_size":
		case "uptime", "time":
			metric := map[string]string{"uptime": "marlin_uptime_seconds", "time": "marlin_time_seconds"}[name]
			d := val(metric) - n
			require.True(t, d >= 0 && d < 2, "stats %s %s, %s %v", name, v, metric, val(metric))
		case "bytes_written":
			// The stats reply itself was written after its figures, in
			// one write, counted once the write returned: the client
			// may have read it before.
			w := val("marlin_written_bytes_total")
			require.True(t, w == n || w == n+float64(len(stats)), "stats bytes_written %v, its reply %d bytes, metric %v", n, len(stats), w)
		case "limit_maxbytes":
			// The log's bytes plus the file system's free bytes, which
			// other writers on the machine move between the two reads.
			m := val("marlin_limit_bytes")
			require.InEpsilon(t, n, m, 0.01, "stats limit_maxbytes %v, metric %v", n, m)
			require.Greater(t, n, float64(1<<20), "limit_maxbytes counts the free disk")
		case "marlin_go_heap_bytes":
			// go_memstats_heap_alloc_bytes: changes with every allocation.
			require.Greater(t, val("go_memstats_heap_alloc_bytes"), float64(0))
		default:
			metric, ok := agree[name]
			require.True(t, ok, "stats %s has no metric in metrics.go (or in this test's table)", name)
			parts := strings.Fields(metric)
			var labels []string
			for _, p := range parts[1:] {
				k, v, _ := strings.Cut(p, "=")
				labels = append(labels, k, v)
			}
			require.Equal(t, n, val(parts[0], labels...), "stats %s = %s, metric %s", name, v, metric)
		}
		seen++
	}
	require.Greater(t, seen, 30)

	// Engine figures are there; promlint finds nothing to fix.
	require.Equal(t, float64(2), val("marlin_current_items")) // b and n
	require.GreaterOrEqual(t, val("marlin_engine_keys"), float64(2))
	require.Greater(t, val("marlin_engine_disk_bytes"), float64(0))
	problems, err := testutil.GatherAndLint(s.metrics.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// checkBuckets checks a histogram's buckets: the bounds are
// latencyBuckets, the counts cumulative and at most the count, +Inf (if
// the parser kept it) the count, and the sum sane.
func checkBuckets(t *testing.T, cmd string, h *dto.Histogram) {
	t.Helper()
	var prev uint64
	i := 0
	for _, b := range h.Bucket {
		if math.IsInf(b.GetUpperBound(), 1) {
			require.Equal(t, h.GetSampleCount(), b.GetCumulativeCount(), cmd)
			continue
		}
		require.Less(t, i, len(latencyBuckets), cmd)
		require.Equal(t, latencyBuckets[i], b.GetUpperBound(), cmd)
		i++
		require.GreaterOrEqual(t, b.GetCumulativeCount(), prev, "%s: buckets not cumulative", cmd)
		require.LessOrEqual(t, b.GetCumulativeCount(), h.GetSampleCount(), cmd)
		prev = b.GetCumulativeCount()
	}
	require.Equal(t, len(latencyBuckets), i, cmd)
	require.GreaterOrEqual(t, h.GetSampleSum(), float64(0), cmd)
	if h.GetSampleCount() > 0 {
		require.Greater(t, h.GetSampleSum(), float64(0), cmd)
		// Commands on an idle test machine take well under a second.
		require.Equal(t, h.GetSampleCount(), h.Bucket[len(latencyBuckets)-1].GetCumulativeCount(), "%s: a command over 1 s", cmd)
	} else {
		require.Zero(t, h.GetSampleSum(), cmd)
	}
}

// TestMetricsNoAlloc: timing a command and observing it allocates nothing.
func TestMetricsNoAlloc(t *testing.T) {
	_, s, _ := startServer(t, "", Config{})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(s, a)
	cmd := func() error { c.setOp(mopGet); return nil }
	allocs := testing.AllocsPerRun(1000, func() {
		if !c.run(cmd) {
			t.Fatal("run stopped")
		}
	})
	require.Zero(t, allocs)
	h := findMetricIn(t, s, "get")
	require.GreaterOrEqual(t, h.GetSampleCount(), uint64(1000))
}

// findMetricIn gathers s's registry directly and returns the histogram of
// command.
func findMetricIn(t *testing.T, s *Server, command string) *dto.Histogram {
	t.Helper()
	fams, err := s.metrics.reg.Gather()
	require.NoError(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	return findMetric(t, byName, "marlin_command_duration_seconds", "command", command).GetHistogram()
}

// TestMetricsAfterClose: with the database closed a scrape still answers,
// marlin_up 0, without the engine's figures.
func TestMetricsAfterClose(t *testing.T) {
	db, err := engine.Open(t.TempDir(), &engine.Options{Sync: engine.SyncNone, MaxValueSize: 2 << 20})
	require.NoError(t, err)
	s, err := New(db, Config{})
	require.NoError(t, err)
	require.NoError(t, db.Close())
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	require.NoError(t, err)
	require.Equal(t, float64(0), metricValue(t, fams, "marlin_up"))
	require.NotContains(t, fams, "marlin_engine_keys")
	require.Contains(t, fams, "marlin_cmd_get_total")
}
