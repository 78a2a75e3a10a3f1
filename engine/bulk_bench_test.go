package engine

import (
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBulkLoadScale measures a bulk load of MARLIN_BULK_N thin records
// (16-byte keys, 8-byte values) into MARLIN_BULK_DIR (a new directory on a
// real disk), then opens the result and reports the figures. Skipped
// unless both are set, e.g.
//
//	MARLIN_BULK_N=10000000 MARLIN_BULK_DIR=/tmp/bulk go test -run TestBulkLoadScale -v ./engine/
func TestBulkLoadScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MARLIN_BULK_N"))
	dir := os.Getenv("MARLIN_BULK_DIR")
	if n <= 0 || dir == "" {
		t.Skip("set MARLIN_BULK_N and MARLIN_BULK_DIR")
	}
	defer os.RemoveAll(dir)
	var k [16]byte
	var v [8]byte
	i, x := 0, uint64(12345)
	src := BulkSourceFunc(func() ([]byte, []byte, error) {
		if i == n {
			return nil, nil, io.EOF
		}
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint64(k[:], z^z>>31)
		binary.LittleEndian.PutUint64(k[8:], uint64(i))
		binary.LittleEndian.PutUint64(v[:], uint64(i))
		i++
		return k[:], v[:], nil
	})
	start := time.Now()
	st, err := BulkLoad(dir, nil, src, nil)
	require.NoError(t, err)
	el := time.Since(start)
	t.Logf("bulk load: %d records in %v: %.0f records/s; log pass %v, index pass %v, publish %v",
		st.Records, el.Round(time.Millisecond), float64(st.Records)/el.Seconds(), st.LogPass.Round(time.Millisecond),
		st.IndexPass.Round(time.Millisecond), st.Publish.Round(time.Millisecond))
	t.Logf("bytes: log %d (%.1f B/record), spill %d, snapshot %d; written/log = %.2f; largest partition %d entries; key reads %d",
		st.LogBytes, float64(st.LogBytes)/float64(st.Records), st.SpillBytes, st.SnapshotBytes,
		float64(st.LogBytes+st.SpillBytes+st.SnapshotBytes)/float64(st.LogBytes), st.MaxPartitionEntries, st.KeyReads)
	t.Logf("after load: %s", procMem())
	start = time.Now()
	db, err := Open(dir, nil)
	require.NoError(t, err)
	t.Logf("open: %v, snapshot loaded %v, keys %d; %s", time.Since(start).Round(time.Millisecond),
		db.st.snapshotLoaded.Load(), db.ix.Len(), procMem())
	require.Equal(t, int64(n), db.ix.Len())
	require.NoError(t, db.Close())
}

// procMem returns the process's peak and current anonymous memory figures.
func procMem() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM") || strings.HasPrefix(l, "RssAnon") || strings.HasPrefix(l, "VmRSS") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, ", ")
}
