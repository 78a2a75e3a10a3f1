package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// RSSAnon returns the process's resident anonymous memory (RssAnon in
// /proc/self/status) in bytes, or 0 where that is not available. Unlike
// the Go heap it includes off-heap memory (Marlin's index and write buffer
// live in anonymous mmaps), and unlike RSS it excludes the page cache's
// file mappings.
func RSSAnon() int64 { return RSSAnonOf("/proc/self/status") }

// RSSAnonOf reads RssAnon from a /proc/PID/status file.
func RSSAnonOf(statusFile string) int64 {
	data, err := os.ReadFile(statusFile)
	if err != nil {
		return 0
	}
	return parseRSSAnon(string(data))
}

func parseRSSAnon(status string) int64 {
	for line := range strings.SplitSeq(status, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// settledRSSAnon collects garbage and returns freed heap memory to the OS
// before reading RssAnon, so that readings taken before and after a run
// compare live memory, not the collector's timing.
func settledRSSAnon() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return RSSAnon()
}

// Footprint holds the raw measurements behind the per-key figures.
type Footprint struct {
	Keys         int64 // records in the DB
	RSSBefore    int64 // RssAnon before Open
	RSSAfter     int64 // RssAnon after the run
	Heap         int64 // Go heap in use after the run
	IndexBytes   int64 // the index's resident memory
	DiskBytes    int64 // segment files
	BytesWritten int64 // by the engine to files, over the whole run
	UserBytes    int64 // keys and values given to the engine
}

// PerKey returns bytes divided by keys (0 without keys).
func PerKey(bytes, keys int64) float64 {
	if keys <= 0 {
		return 0
	}
	return float64(bytes) / float64(keys)
}

// WriteAmp returns bytes written to disk per byte of user data (0 when
// nothing was given).
func WriteAmp(written, user int64) float64 {
	if user <= 0 {
		return 0
	}
	return float64(written) / float64(user)
}

// setFootprint fills the report's memory and disk figures from f.
func (rep *Report) setFootprint(f Footprint) {
	rep.KeysInDB = f.Keys
	rep.RSSAnon = f.RSSAfter
	rep.RSSAnonUsed = max(f.RSSAfter-f.RSSBefore, 0)
	rep.Heap = f.Heap
	rep.IndexBytes = f.IndexBytes
	rep.DiskBytes = f.DiskBytes
	rep.BytesWritten = f.BytesWritten
	rep.UserBytes = f.UserBytes
	rep.RAMPerKey = PerKey(rep.RSSAnonUsed, f.Keys)
	rep.IndexPerKey = PerKey(f.IndexBytes, f.Keys)
	rep.DiskPerKey = PerKey(f.DiskBytes, f.Keys)
	rep.WriteAmp = WriteAmp(f.BytesWritten, f.UserBytes)
}

// measure takes the memory and disk readings after the run.
func (r *runner) measure(rss0 int64) error {
	st, err := r.db.Stats()
	if err != nil {
		return err
	}
	rss := settledRSSAnon()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.rep.Segments = len(st.Segments)
	r.rep.ExpectedKeys = r.expectedKeys()
	if st.Keys != r.rep.ExpectedKeys {
		r.wrong("after the run: %d keys in the index, want %d", st.Keys, r.rep.ExpectedKeys)
	}
	r.rep.setFootprint(Footprint{
		Keys: st.Keys, RSSBefore: rss0, RSSAfter: rss, Heap: int64(ms.HeapAlloc),
		IndexBytes: st.Index.ResidentBytes, DiskBytes: st.DiskBytes,
		BytesWritten: st.BytesWritten, UserBytes: st.UserBytes,
	})
	return nil
}
