package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Config describes one benchmark run.
type Config struct {
	Dir        string        // data directory; "" means a new temp dir
	Keep       bool          // keep the directory afterwards
	ReuseDir   bool          // write into a Dir that is not empty (its data makes answers wrong)
	Keys       uint64        // records loaded before the run phase
	Ops        int64         // operations in the run phase (iterate: full scans); 0 means run for Duration
	Duration   time.Duration // run phase length when Ops is 0
	Goroutines int           // concurrent clients
	BatchSize  int           // puts per batch in the load phase (1 = single puts)
	KeyMin     int           // key size range, bytes (at least 8); a key's size is a function of its id
	KeyMax     int           // 0 means KeyMin
	ValueMin   int           // value size range, bytes; each write draws a size
	ValueMax   int           // 0 means ValueMin
	Workload   string        // load, a, b, c, d, f, miss, iterate, mixed
	Mix        Mix           // operation ratios for the mixed workload
	Dist       string        // uniform, zipfian, scrambled, latest
	Sync       engine.SyncMode
	Segment    int64     // segment size, bytes; 0 = engine default
	Seed       uint64    // seeds every goroutine's generator: runs are reproducible
	Verify     bool      // after the restart, read every record back and check it
	Progress   io.Writer // progress lines; nil for none
	Terminal   bool      // Progress is a terminal: redraw one line
}

func (c *Config) keySize(id uint64) int { return KeySize(id, c.KeyMin, c.KeyMax) }

// Mix gives the relative weights of operations in the mixed workload.
type Mix struct {
	Get, Put, Delete int // weights: each operation's share is its weight over their sum
}

// String formats the weights as get:put:delete, as ParseMix reads them.
func (m Mix) String() string { return fmt.Sprintf("%d:%d:%d", m.Get, m.Put, m.Delete) }

// ParseMix parses "get:put:delete" weights such as "90:9:1".
func ParseMix(s string) (Mix, error) {
	f := strings.Split(s, ":")
	if len(f) != 3 {
		return Mix{}, fmt.Errorf("mix %q: want get:put:delete weights, e.g. 90:9:1", s)
	}
	var w [3]int
	for i, x := range f {
		v, err := strconv.Atoi(x)
		if err != nil || v < 0 {
			return Mix{}, fmt.Errorf("mix %q: bad weight %q", s, x)
		}
		w[i] = v
	}
	if w[0]+w[1]+w[2] == 0 {
		return Mix{}, fmt.Errorf("mix %q: all weights are zero", s)
	}
	return Mix{w[0], w[1], w[2]}, nil
}

// Workloads lists the workload names with a one-line description each.
var Workloads = []struct{ Name, About string }{
	{"load", "only the load phase: insert Keys records"},
	{"a", "YCSB A: 50% reads, 50% updates"},
	{"b", "YCSB B: 95% reads, 5% updates"},
	{"c", "YCSB C: reads only"},
	{"d", "YCSB D: 95% reads of recent records, 5% inserts (latest distribution)"},
	{"f", "YCSB F: 50% reads, 50% read-modify-writes"},
	{"miss", "reads of absent keys"},
	{"iterate", "full scans of every pair (--ops counts scans; throughput counts pairs)"},
	{"mixed", "get/put/delete with the ratios of --mix"},
	{"fill", "cold traffic on an empty database with a read-through loader: hit rate, latency and fill queue per second (RunFill)"},
	{"expire", "10 million keys expire at once: get p99 per second while the expirer reclaims them, against the quiet seconds (RunSpike)"},
	{"evict", "cache mode: writes push the database over --max-disk; get p99 in the seconds eviction runs against the others (RunSpike)"},
}

// DefaultConfig is the README's main job: a load of 2 million thin records
// and a 30-second read-heavy zipfian run from 2 goroutines.
func DefaultConfig() Config {
	return Config{
		Keys: 2_000_000, Duration: 30 * time.Second, Goroutines: 2, BatchSize: 1000,
		KeyMin: 16, KeyMax: 16, ValueMin: 8, ValueMax: 8, Workload: "b", Dist: "scrambled",
		Sync: engine.SyncNone, Mix: Mix{90, 9, 1}, Seed: 1,
	}
}

// normalize fills the defaults of zero fields and validates.
func (c *Config) normalize() error {
	c.KeyMin = max(c.KeyMin, 8)
	if c.KeyMax == 0 {
		c.KeyMax = c.KeyMin
	}
	if c.ValueMax == 0 {
		c.ValueMax = c.ValueMin
	}
	known := false
	for _, w := range Workloads {
		known = known || w.Name == c.Workload
	}
	switch {
	case !known:
		return fmt.Errorf("unknown workload %q", c.Workload)
	case c.Workload == "fill":
		return fmt.Errorf("the fill workload runs with RunFill")
	case c.Workload == "expire" || c.Workload == "evict":
		return fmt.Errorf("the %s workload runs with RunSpike", c.Workload)
	case c.Keys == 0 && c.Workload != "load":
		return fmt.Errorf("keys must be positive")
	case c.Goroutines < 1:
		return fmt.Errorf("goroutines must be at least 1")
	case c.BatchSize < 1:
		return fmt.Errorf("batch size must be at least 1")
	case c.KeyMax < c.KeyMin || c.KeyMax > 65535:
		return fmt.Errorf("bad key size range %d..%d", c.KeyMin, c.KeyMax)
	case c.ValueMin < 0 || c.ValueMax < c.ValueMin:
		return fmt.Errorf("bad value size range %d..%d", c.ValueMin, c.ValueMax)
	case c.Mix.Get < 0 || c.Mix.Put < 0 || c.Mix.Delete < 0 ||
		c.Workload == "mixed" && c.Mix.Get+c.Mix.Put+c.Mix.Delete == 0:
		return fmt.Errorf("bad mix %s", c.Mix)
	case c.Ops < 0:
		return fmt.Errorf("negative number of operations")
	case c.Workload != "load" && c.Ops == 0 && c.Duration <= 0:
		return fmt.Errorf("give a number of operations or a duration")
	}
	switch c.Dist {
	case "uniform", "zipfian", "scrambled", "latest":
	default:
		return fmt.Errorf("unknown distribution %q (uniform, zipfian, scrambled, latest)", c.Dist)
	}
	return nil
}
