package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRunSpikeSmall(t *testing.T) {
	t.Run("expire", func(t *testing.T) {
		c := DefaultSpikeConfig("expire")
		c.Keys, c.Rate, c.Duration, c.ExpireAt, c.Dir = 20_000, 2_000, 4*time.Second, 2*time.Second, t.TempDir()
		rep, err := RunSpike(c)
		require.NoError(t, err)
		require.Zero(t, rep.Errors)
		require.Len(t, rep.Seconds, 4)
		require.Equal(t, uint64(22_000), rep.Loaded, "20,000 TTL keys and 2,000 without")
		require.Equal(t, int64(20_000), rep.Reclaimed, "the expirer reclaims every TTL key")
		for _, s := range rep.Seconds[:1] {
			require.Zero(t, s.Reclaimed, "nothing expires before ExpireAt")
		}
		var gets, hits int64
		for _, s := range rep.Seconds {
			gets += s.Gets
			hits += s.Hits
		}
		require.InDelta(t, 8_000, gets, 800)
		require.Equal(t, gets, hits, "the keys without a TTL all stay")
		require.Positive(t, rep.Active.Count)
		require.Positive(t, rep.Quiet.Count)
		var out bytes.Buffer
		rep.WriteText(&out)
		require.Contains(t, out.String(), "p99 with reclamation / without")
		require.NoError(t, rep.WriteJSON(&out))
	})
	t.Run("evict", func(t *testing.T) {
		c := DefaultSpikeConfig("evict")
		c.MaxDisk, c.Rate, c.Duration, c.Dir = 64<<20, 2_000, 5*time.Second, t.TempDir()
		rep, err := RunSpike(c)
		require.NoError(t, err)
		require.Zero(t, rep.Errors)
		require.Positive(t, rep.Reclaimed, "the writes pushed the database over the limit")
		require.LessOrEqual(t, rep.Reclaimed, rep.Final.Evictions, "the per-second figures are samples of Stats.Evictions")
		require.LessOrEqual(t, rep.Final.DiskBytes, c.MaxDisk+int64(c.WriteRate)*spikeRecord(&c),
			"at most a second of writes over the limit")
		var gets, hits int64
		for _, s := range rep.Seconds {
			gets += s.Gets
			hits += s.Hits
		}
		require.Equal(t, gets, hits, "the newest keys stay")
	})
}
