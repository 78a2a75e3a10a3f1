package bench

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRunScaleSmall(t *testing.T) {
	for _, load := range []string{"bulk", "batch"} {
		t.Run(load, func(t *testing.T) { testRunScale(t, load) })
	}
}

func testRunScale(t *testing.T, load string) {
	c := DefaultScaleConfig()
	c.Load = load
	c.Dir = t.TempDir()
	c.Keys, c.Inserts = 30_000, 5_000
	c.PhaseTime = 150 * time.Millisecond
	c.ReadGoroutines = 8
	c.DropCache = false // needs root, and would slow every other test on the machine
	c.Scan = true
	procs := runtime.GOMAXPROCS(0)
	rep, err := RunScale(c)
	require.NoError(t, err)
	require.Equal(t, procs, runtime.GOMAXPROCS(0), "GOMAXPROCS restored after the cold phases")
	require.Equal(t, 16, rep.Phase("cold get").GOMAXPROCS)
	require.Equal(t, 16, rep.Phase("cold update").GOMAXPROCS)
	require.Equal(t, procs, rep.Phase("hot zipfian get").GOMAXPROCS)
	require.Empty(t, rep.Err)
	require.Zero(t, rep.Wrong)
	require.EqualValues(t, 35_000, rep.KeysInDB)
	require.EqualValues(t, 30_000, rep.KeysLoaded)
	for _, name := range []string{"load", "insert", "cold get", "absent get", "hot zipfian get", "cold update", "scan"} {
		p := rep.Phase(name)
		require.NotNil(t, p, name)
		require.Positive(t, p.Ops, name)
		require.False(t, p.Cold, name)
	}
	require.Nil(t, rep.Phase("hot zipfian warm-up"))
	require.EqualValues(t, 30_000, rep.Phase("load").Ops)
	require.EqualValues(t, 5_000, rep.Phase("insert").Ops)
	require.EqualValues(t, 35_000, rep.Phase("scan").Ops)
	require.True(t, rep.FromSnapshot)
	require.Positive(t, rep.LogBytes)
	require.GreaterOrEqual(t, rep.DirBytes, rep.LogBytes)
	require.Positive(t, rep.PeakRSSAnon)

	var b strings.Builder
	ScaleTable(&b, []*ScaleReport{rep, rep})
	out := b.String()
	require.Contains(t, out, "| keys | 30,000 | 30,000 |")
	require.Contains(t, out, "| error | none | none |")
	require.Contains(t, out, "| cold uniform gets, 8 goroutines, GOMAXPROCS 16 |")
}

func TestRunScaleRejectsBadConfig(t *testing.T) {
	c := DefaultScaleConfig()
	c.Keys = 0
	_, err := RunScale(c)
	require.ErrorContains(t, err, "keys must be positive")
	c = DefaultScaleConfig()
	c.Load = "teleport"
	_, err = RunScale(c)
	require.ErrorContains(t, err, "load")
}
