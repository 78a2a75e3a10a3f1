package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseMix(t *testing.T) {
	m, err := ParseMix("90:9:1")
	require.NoError(t, err)
	require.Equal(t, Mix{90, 9, 1}, m)
	require.Equal(t, "90:9:1", m.String())
	for _, bad := range []string{"", "1:2", "1:2:3:4", "a:1:1", "-1:1:1", "0:0:0"} {
		_, err := ParseMix(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestNormalize(t *testing.T) {
	c := DefaultConfig()
	c.KeyMin, c.KeyMax, c.ValueMin, c.ValueMax = 3, 0, 100, 0
	require.NoError(t, c.normalize())
	require.Equal(t, 8, c.KeyMin)
	require.Equal(t, 8, c.KeyMax)
	require.Equal(t, 100, c.ValueMax)

	bad := []func(c *Config){
		func(c *Config) { c.Workload = "z" },
		func(c *Config) { c.Dist = "normal" },
		func(c *Config) { c.Keys = 0 },
		func(c *Config) { c.Goroutines = 0 },
		func(c *Config) { c.BatchSize = 0 },
		func(c *Config) { c.KeyMin, c.KeyMax = 20, 10 },
		func(c *Config) { c.ValueMin, c.ValueMax = 20, 10 },
		func(c *Config) { c.ValueMin = -1 },
		func(c *Config) { c.Ops, c.Duration = 0, 0 },
		func(c *Config) { c.Ops = -1 },
		func(c *Config) { c.Workload, c.Mix = "mixed", Mix{} },
		func(c *Config) { c.Mix = Mix{1, -1, 1} },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		require.Error(t, c.normalize(), "case %d", i)
	}
	// The load workload needs neither keys nor a run length.
	c = DefaultConfig()
	c.Workload, c.Keys, c.Duration = "load", 0, 0
	require.NoError(t, c.normalize())
}

func TestDefaultConfigIsTheREADMEJob(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.normalize())
	require.Equal(t, uint64(2_000_000), c.Keys)
	require.Equal(t, "b", c.Workload)
	require.Equal(t, "scrambled", c.Dist)
	require.Equal(t, 30*time.Second, c.Duration)
	require.Equal(t, 2, c.Goroutines)
	require.Equal(t, "", c.Dir, "a temp dir")
	require.False(t, c.Keep)
}

func TestProgressLine(t *testing.T) {
	l := progressLine("load", 500_000, 250_000, time.Second, 2*time.Second, 1_000_000, 0)
	require.Equal(t, "load: 500,000 ops, 250,000 ops/s, 2s elapsed, 50%, ETA 2s", l)
	l = progressLine("run b", 3_000_000, 1_000_000, time.Second, 3*time.Second, 0, 30*time.Second)
	require.Equal(t, "run b: 3,000,000 ops, 1,000,000 ops/s, 3s elapsed, 27s left", l)
}
