package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// parseHTML walks the page with encoding/xml in its HTML mode and returns
// the elements by name, with their attributes; it fails on markup that
// does not nest.
func parseHTML(t *testing.T, page []byte) map[string][]map[string]string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	out := map[string][]map[string]string{}
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			attrs := map[string]string{}
			for _, a := range e.Attr {
				attrs[a.Name.Local] = a.Value
			}
			out[e.Name.Local] = append(out[e.Name.Local], attrs)
		case xml.EndElement:
			depth--
		}
	}
	require.Zero(t, depth, "every element is closed")
	return out
}

func TestWriteHTML(t *testing.T) {
	rep := &Report{Workload: "b <&>", Dist: "zipfian", Keys: 1000, Goroutines: 2, Sync: "none",
		Phases: []Phase{
			{Name: "load", Ops: 1000, Seconds: 0.1, OpsPerSec: 10000,
				Timeline: []Sample{{At: 0.1, OpsPerSec: 10000}},
				Latency:  map[string]Latency{"batch": {Count: 1, P50: 2e6, P90: 3e6, P99: 4e6, P999: 4e6, Max: 4e6, Mean: 2e6}}},
			{Name: "run b", Ops: 50000, Seconds: 2, OpsPerSec: 25000,
				Timeline: []Sample{{0.25, 20000}, {0.5, 30000}, {0.75, 25000}, {1, 26000}, {2, 24000}},
				Latency: map[string]Latency{
					"get": {Count: 40000, P50: 800, P90: 1500, P99: 9000, P999: 50000, Max: 2e6, Mean: 1000},
					"put": {Count: 10000, P50: 3000, P90: 5000, P99: 20000, P999: 90000, Max: 5e6, Mean: 4000}}},
		}}
	var buf bytes.Buffer
	require.NoError(t, WriteHTML(&buf, rep))
	page := buf.Bytes()
	els := parseHTML(t, page)
	require.Len(t, els["title"], 1)
	require.Contains(t, buf.String(), "b &lt;&amp;&gt;", "the workload name is escaped")
	require.Len(t, els["svg"], 5, "a rate chart per phase and a latency chart per operation kind")
	require.Len(t, els["polyline"], 2)
	require.Len(t, strings.Fields(els["polyline"][1]["points"]), 5, "a point per sample")
	require.Len(t, els["rect"], 15, "five percentiles per operation kind")
	require.Len(t, els["circle"], 6, "the short load phase's one sample is visible")
	require.Empty(t, els["script"], "no script")
	for _, name := range []string{"link", "img", "iframe"} {
		require.Empty(t, els[name], "nothing fetched: %s", name)
	}
	require.NotContains(t, buf.String(), "http://")
	require.NotContains(t, buf.String(), "https://")
	// Bars grow with the percentile.
	var prevH float64 = -1
	for _, r := range els["rect"][5:10] { // get's
		h := r["height"]
		var v float64
		_, err := fmt.Sscan(h, &v)
		require.NoError(t, err)
		require.GreaterOrEqual(t, v, prevH)
		prevH = v
	}
}

func TestSampleRateHalves(t *testing.T) {
	var s []Sample
	for i := range 801 {
		s = append(s, Sample{At: float64(i+1) * 0.25, OpsPerSec: 100})
	}
	for len(s) > maxSamples {
		s = halve(s)
	}
	require.LessOrEqual(t, len(s), maxSamples)
	require.InDelta(t, 801*0.25, s[len(s)-1].At, 1e-9, "the last sample keeps its time")
	for _, x := range s {
		require.InDelta(t, 100, x.OpsPerSec, 1e-9, "a constant rate stays constant")
	}
}
