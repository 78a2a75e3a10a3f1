package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	fillq "github.com/marlinkv/marlin/fill"
)

func TestRunFillSmall(t *testing.T) {
	cfg := DefaultFillConfig()
	cfg.Dir = t.TempDir()
	cfg.Keys, cfg.Rate, cfg.Duration, cfg.Clients = 2000, 4000, 2*time.Second, 2
	cfg.LoadLatency = time.Millisecond
	cfg.Fill = fillq.Options{Workers: 8, QueueSize: 1000}
	rep, err := RunFill(cfg)
	require.NoError(t, err)
	require.Len(t, rep.Seconds, 2)
	require.InDelta(t, 8000, rep.Requests, 1600, "the clients keep to the rate")
	require.Zero(t, rep.Errors)
	s1, s2 := rep.Seconds[0], rep.Seconds[1]
	require.Greater(t, s2.HitRate, s1.HitRate, "the hit rate climbs")
	require.Greater(t, s2.HitRate, 0.5)
	require.Equal(t, rep.Hits, s1.Hits+s2.Hits)
	// Every miss was queued, coalesced, or dropped; every key stored was
	// loaded once.
	require.Equal(t, rep.Fill.Filled, uint64(rep.Keys))
	require.Equal(t, uint64(rep.Requests-rep.Hits), rep.Fill.Queued+rep.Fill.Coalesced+rep.Fill.Dropped+rep.Fill.Negative)
	require.LessOrEqual(t, s1.Filled+s2.Filled, rep.Fill.Filled, "loads still in flight at the last sample finish at Close")
	require.Positive(t, s1.Filled)
	require.Positive(t, rep.All.P99)

	var text bytes.Buffer
	rep.WriteText(&text)
	require.Contains(t, text.String(), "hit rate")
	var svg bytes.Buffer
	require.NoError(t, rep.WriteSVG(&svg))
	require.Equal(t, 4, strings.Count(svg.String(), "<polyline"))
	dec := xml.NewDecoder(&svg)
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the chart is well-formed XML")
	}
}

// TestIdealHits checks the bucketed sum against the exact one.
func TestIdealHits(t *testing.T) {
	const n = 100_000
	z := NewZipfian(n, 0.99, true)
	ih := newIdealHits(z, n, 10_000)
	for _, at := range []float64{0.5, 3, 30} {
		exact := 0.0
		for k := range uint64(n) {
			p := z.Prob(k)
			exact += p * -math.Expm1(-10_000*p*at)
		}
		require.InDelta(t, exact, ih.at(at), 0.005, "t=%v", at)
	}
	require.Less(t, ih.at(0.001), 0.1)
	require.Greater(t, ih.at(1e6), 0.99)
}

func TestFillConfigChecked(t *testing.T) {
	for _, mod := range []func(*FillConfig){
		func(c *FillConfig) { c.Keys = 0 },
		func(c *FillConfig) { c.Rate = 0 },
		func(c *FillConfig) { c.Duration = time.Millisecond },
		func(c *FillConfig) { c.Clients = 0 },
		func(c *FillConfig) { c.Theta = 0 },
	} {
		c := DefaultFillConfig()
		mod(&c)
		_, err := RunFill(c)
		require.Error(t, err)
	}
}
