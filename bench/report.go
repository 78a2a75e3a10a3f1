package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sort"
	"time"

	"github.com/dustin/go-humanize"
)

// Phase is the outcome of one phase of a run.
type Phase struct {
	Name      string             `json:"name"`        // load, run WORKLOAD, verify, ...
	Ops       int64              `json:"ops"`         // operations done
	Seconds   float64            `json:"seconds"`     // how long the phase took
	OpsPerSec float64            `json:"ops_per_sec"` // Ops over Seconds
	Latency   map[string]Latency `json:"latency"`     // by operation kind
	Timeline  []Sample           `json:"timeline"`    // the rate over the phase (the HTML report's chart)
}

// Env describes where a run ran, for reproducing it.
type Env struct {
	GoVersion  string `json:"go_version"` // runtime.Version()
	OS         string `json:"os"`         // runtime.GOOS
	Arch       string `json:"arch"`       // runtime.GOARCH
	CPUs       int    `json:"cpus"`       // runtime.NumCPU()
	GOMAXPROCS int    `json:"gomaxprocs"` // runtime.GOMAXPROCS(0)
}

// Report is everything a run measured, with the configuration that
// produced it.
type Report struct {
	Workload   string   `json:"workload"`                   // the workload name (Config.Workload)
	Dist       string   `json:"distribution"`               // the key distribution
	Mix        string   `json:"mix,omitempty"`              // get:put:delete weights (mixed only)
	Keys       uint64   `json:"keys"`                       // records loaded
	Ops        int64    `json:"ops,omitempty"`              // operations of the run phase (0: it ran for Duration)
	Duration   float64  `json:"duration_seconds,omitempty"` // the run phase's length, when Ops is 0
	Goroutines int      `json:"goroutines"`                 // concurrent clients
	BatchSize  int      `json:"batch_size"`                 // puts per batch in the load
	Sync       string   `json:"sync"`                       // the sync mode
	Segment    int64    `json:"segment_size,omitempty"`     // segment size (0: the default)
	KeyMin     int      `json:"key_min"`                    // smallest key
	KeyMax     int      `json:"key_max"`                    // largest key
	ValueMin   int      `json:"value_min"`                  // smallest value
	ValueMax   int      `json:"value_max"`                  // largest value
	Seed       uint64   `json:"seed"`                       // the random seed
	Env        Env      `json:"env"`                        // where it ran
	Dir        string   `json:"dir,omitempty"`              // the data directory, when kept or given
	Phases     []Phase  `json:"phases"`                     // load, run, verify, in order
	Errors     int64    `json:"errors"`                     // wrong results
	Wrong      []string `json:"wrong,omitempty"`            // the first few
	Verified   bool     `json:"verified"`                   // every record was read back after the restart

	KeysInDB     int64   `json:"keys_in_db"`          // index entries at the end
	ExpectedKeys int64   `json:"expected_keys"`       // what the workload should have left
	RSSAnon      int64   `json:"rss_anon_bytes"`      // process RssAnon after the run
	RSSAnonUsed  int64   `json:"rss_anon_used_bytes"` // growth of RssAnon since before Open
	Heap         int64   `json:"go_heap_bytes"`       // Go heap in use after the run
	IndexBytes   int64   `json:"index_bytes"`         // the index's resident memory
	DiskBytes    int64   `json:"disk_bytes"`          // segment file sizes
	Segments     int     `json:"segments"`            // segment files
	BytesWritten int64   `json:"bytes_written"`       // by the engine, load and run
	UserBytes    int64   `json:"user_bytes"`          // keys and values given to it
	RAMPerKey    float64 `json:"ram_bytes_per_key"`   // RSSAnonUsed over the keys
	IndexPerKey  float64 `json:"index_bytes_per_key"` // IndexBytes over the keys
	DiskPerKey   float64 `json:"disk_bytes_per_key"`  // DiskBytes over the keys
	WriteAmp     float64 `json:"write_amplification"` // BytesWritten over UserBytes

	OpenSecs            float64 `json:"open_seconds"`             // Open's duration
	CloseSecs           float64 `json:"close_seconds"`            // Close's duration
	RestartSecs         float64 `json:"restart_seconds"`          // the timed reopen's duration
	RestartFromSnapshot bool    `json:"restart_from_snapshot"`    // the reopen loaded an index snapshot
	RestartReplayed     int64   `json:"restart_records_replayed"` // records the reopen replayed
}

func newReport(c Config) *Report {
	rep := &Report{Workload: c.Workload, Dist: c.Dist, Keys: c.Keys, Ops: c.Ops, Goroutines: c.Goroutines,
		BatchSize: c.BatchSize, Sync: c.Sync.String(), Segment: c.Segment, KeyMin: c.KeyMin, KeyMax: c.KeyMax,
		ValueMin: c.ValueMin, ValueMax: c.ValueMax, Seed: c.Seed,
		Env: Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0)}}
	if c.Workload == "d" {
		rep.Dist = "latest"
	}
	if c.Workload == "mixed" {
		rep.Mix = c.Mix.String()
	}
	if c.Ops == 0 && c.Workload != "load" {
		rep.Duration = c.Duration.Seconds()
	}
	return rep
}

// Phase returns the phase called name, or nil.
func (rep *Report) Phase(name string) *Phase {
	for i := range rep.Phases {
		if rep.Phases[i].Name == name {
			return &rep.Phases[i]
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// WriteText writes the report for people.
func (rep *Report) WriteText(w io.Writer) {
	workload := rep.Workload
	if rep.Mix != "" {
		workload += " (get:put:delete " + rep.Mix + ")"
	}
	fmt.Fprintf(w, "marlin bench: workload %s, %s distribution, %s keys of %s, values of %s, %d goroutines, batches of %d, sync %s, seed %d\n",
		workload, rep.Dist, humanize.Comma(int64(rep.Keys)), sizeRange(rep.KeyMin, rep.KeyMax),
		sizeRange(rep.ValueMin, rep.ValueMax), rep.Goroutines, rep.BatchSize, rep.Sync, rep.Seed)
	fmt.Fprintf(w, "%s %s/%s, %d CPUs, GOMAXPROCS %d\n", rep.Env.GoVersion, rep.Env.OS, rep.Env.Arch,
		rep.Env.CPUs, rep.Env.GOMAXPROCS)
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "\n%-10s %s ops in %.2fs: %s ops/s\n", p.Name, humanize.Comma(p.Ops), p.Seconds,
			humanize.Comma(int64(p.OpsPerSec)))
		names := make([]string, 0, len(p.Latency))
		for n := range p.Latency {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) > 0 {
			fmt.Fprintf(w, "  %-7s %12s %9s %9s %9s %9s %9s\n", "latency", "count", "p50", "p90", "p99", "p99.9", "max")
		}
		for _, n := range names {
			l := p.Latency[n]
			fmt.Fprintf(w, "  %-7s %12s %9s %9s %9s %9s %9s\n", n, humanize.Comma(l.Count),
				dur(l.P50), dur(l.P90), dur(l.P99), dur(l.P999), dur(l.Max))
		}
	}
	fmt.Fprintf(w, "\nkeys in db      %s\n", humanize.Comma(rep.KeysInDB))
	fmt.Fprintf(w, "memory          RssAnon %s, %s of it since Open (%.1f B/key); index %s (%.1f B/key); Go heap %s\n",
		ibytes(rep.RSSAnon), ibytes(rep.RSSAnonUsed), rep.RAMPerKey, ibytes(rep.IndexBytes), rep.IndexPerKey,
		ibytes(rep.Heap))
	fmt.Fprintf(w, "disk            %s in %d segments (%.1f B/key); write amplification %.2f (%s written for %s of keys and values)\n",
		ibytes(rep.DiskBytes), rep.Segments, rep.DiskPerKey, rep.WriteAmp, ibytes(rep.BytesWritten), ibytes(rep.UserBytes))
	how := "replayed the log"
	if rep.RestartFromSnapshot {
		how = "from the index snapshot"
	}
	fmt.Fprintf(w, "open            %s; close %s; restart %s (%s, %s records replayed)\n",
		secs(rep.OpenSecs), secs(rep.CloseSecs), secs(rep.RestartSecs), how, humanize.Comma(rep.RestartReplayed))
	if rep.Verified {
		fmt.Fprintf(w, "verified        every record read back after the restart\n")
	}
	if rep.Dir != "" {
		fmt.Fprintf(w, "data directory  %s\n", rep.Dir)
	}
	if rep.Errors > 0 {
		fmt.Fprintf(w, "WRONG RESULTS   %d\n", rep.Errors)
		for _, s := range rep.Wrong {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
}

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func sizeRange(lo, hi int) string {
	if lo == hi {
		return fmt.Sprintf("%d bytes", lo)
	}
	return fmt.Sprintf("%d..%d bytes", lo, hi)
}

func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", ns)
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(ns)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(ns)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func secs(s float64) string { return dur(int64(s * 1e9)) }
