package bench

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPerKeyAndWriteAmp(t *testing.T) {
	require.Equal(t, 0.0, PerKey(100, 0))
	require.Equal(t, 2.5, PerKey(25, 10))
	require.Equal(t, 0.0, WriteAmp(100, 0))
	require.Equal(t, 1.5, WriteAmp(150, 100))
}

func TestSetFootprint(t *testing.T) {
	// 10 million thin records: 16-byte keys and 8-byte values (240 MB of
	// user data); the engine wrote 400 MB and kept 380 MB of files; RssAnon
	// grew from 20 MiB to 132 MiB.
	var rep Report
	rep.setFootprint(Footprint{
		Keys: 10_000_000, RSSBefore: 20 << 20, RSSAfter: 132 << 20, Heap: 4 << 20,
		IndexBytes: 101_000_000, DiskBytes: 380_000_000,
		BytesWritten: 400_000_000, UserBytes: 240_000_000,
	})
	require.Equal(t, int64(10_000_000), rep.KeysInDB)
	require.Equal(t, int64(112<<20), rep.RSSAnonUsed)
	require.Equal(t, int64(132<<20), rep.RSSAnon)
	require.InDelta(t, 11.744, rep.RAMPerKey, 0.001)
	require.InDelta(t, 10.1, rep.IndexPerKey, 1e-9)
	require.InDelta(t, 38.0, rep.DiskPerKey, 1e-9)
	require.InDelta(t, 1.6667, rep.WriteAmp, 1e-4)
	require.Equal(t, int64(400_000_000), rep.BytesWritten)

	// Memory that shrank counts as zero growth, not negative bytes.
	rep.setFootprint(Footprint{Keys: 5, RSSBefore: 100, RSSAfter: 50})
	require.Equal(t, int64(0), rep.RSSAnonUsed)
	require.Equal(t, 0.0, rep.RAMPerKey)
	require.Equal(t, 0.0, rep.WriteAmp)
}

func TestParseRSSAnon(t *testing.T) {
	status := "Name:\tmarlin\nVmRSS:\t  5000 kB\nRssAnon:\t    1234 kB\nRssFile:\t 77 kB\n"
	require.Equal(t, int64(1234<<10), parseRSSAnon(status))
	require.Equal(t, int64(0), parseRSSAnon("Name: x\n"))
	require.Equal(t, int64(0), RSSAnonOf("/nonexistent/status"))
	if runtime.GOOS == "linux" {
		require.Positive(t, RSSAnon())
		before := settledRSSAnon()
		buf := make([]byte, 64<<20)
		for i := 0; i < len(buf); i += 4096 {
			buf[i] = 1
		}
		require.Greater(t, RSSAnon()-before, int64(60<<20), "RssAnon sees touched memory")
		runtime.KeepAlive(buf)
	}
}
