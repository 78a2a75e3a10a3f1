package peers

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func smallConfig(t *testing.T) Config {
	return Config{Keys: 5000, KeySize: 16, ValueSize: 100, Batch: 1000, Gets: 5000, Goroutines: 2, Seed: 1,
		Dir: filepath.Join(t.TempDir(), "data")}
}

// runEngine runs every built-in engine (only map without tags; all with
// -tags peer_all) at small scale and checks the result.
func TestRunBuiltInEngines(t *testing.T) {
	for _, name := range BuiltIn() {
		t.Run(name, func(t *testing.T) {
			e, _ := Lookup(name)
			c := smallConfig(t)
			res, err := Run(e, c)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Error != "" {
				t.Fatalf("errors %d %q %v", res.Errors, res.Error, res.Wrong)
			}
			if res.PutsPerSec <= 0 || res.GetsPerSec <= 0 || res.MissPerSec <= 0 {
				t.Errorf("rates %v %v %v", res.PutsPerSec, res.GetsPerSec, res.MissPerSec)
			}
			if res.Keys != 5000 || res.ValueSize != 100 || res.Engine != name || res.Config == "" || res.Short == "" {
				t.Errorf("result does not describe the run: %+v", res)
			}
			if res.RSSAnon <= 0 || res.Version == "" { // test binaries carry no module versions
				t.Errorf("rss %d version %q", res.RSSAnon, res.Version)
			}
			if e.InMemory {
				if res.DiskBytes != 0 || res.RestartSecs != 0 {
					t.Errorf("in-memory engine with disk %d restart %v", res.DiskBytes, res.RestartSecs)
				}
				return
			}
			// 5000 records of 116 bytes of keys and values can not take less.
			if res.DiskBytes < 5000*116 || res.RestartSecs <= 0 {
				t.Errorf("disk %d restart %v", res.DiskBytes, res.RestartSecs)
			}
		})
	}
}

// lying stores every value under the wrong key and answers gets of
// absent keys: the child must notice both.
type lying struct{ goMap }

func (l lying) WriteBatch(keys, vals [][]byte) error {
	shifted := append(vals[1:len(vals):len(vals)], vals[0])
	return l.goMap.WriteBatch(keys, shifted)
}

func (l lying) Get(dst, key []byte) ([]byte, bool, error) {
	v, ok, err := l.goMap.Get(dst, key)
	if !ok {
		return append(dst, "x"...), true, err
	}
	return v, ok, err
}

func TestRunCatchesWrongAnswers(t *testing.T) {
	e := Engine{Name: "liar", InMemory: true, Open: func(string) (Store, error) { return lying{goMap{}}, nil }}
	res, err := Run(e, smallConfig(t))
	if err == nil || res.Errors < 10_000 || len(res.Wrong) != 10 {
		t.Fatalf("err %v, errors %d, samples %v", err, res.Errors, res.Wrong)
	}
	if !strings.Contains(strings.Join(res.Wrong, "\n"), "wrong value") {
		t.Errorf("samples %v", res.Wrong)
	}
}

func TestRunBadConfig(t *testing.T) {
	e, _ := Lookup("map")
	c := smallConfig(t)
	c.Batch = 0
	if _, err := Run(e, c); err == nil {
		t.Fatal("batch 0 accepted")
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 10_000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "b"), bytes.Repeat([]byte{1}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 15_000 || n > 15_000+2*64<<10 {
		t.Fatalf("disk usage %d", n)
	}
}

func TestWriteTable(t *testing.T) {
	results := []*Result{
		{Engine: "marlin", Short: "SyncNone", Config: "the config", Version: "local", Keys: 1000, PutsPerSec: 1_820_000,
			GetsPerSec: 3_260_000, MissPerSec: 6_870_000, RSSAnon: 112 << 20, RAMPerKey: 11.24, DiskBytes: 40_000,
			DiskPerKey: 40, RestartSecs: 0.095},
		{Engine: "pebble", Error: "build: exit status 1: a | b\nc"},
		{Engine: "map", Short: "map", Config: "a map", Version: "go1.26", PutsPerSec: 999, GetsPerSec: 12_345,
			MissPerSec: 1, RSSAnon: 1 << 30, RAMPerKey: 100},
	}
	var b bytes.Buffer
	WriteTable(&b, Header{Config: Config{Keys: 10_000_000, KeySize: 16, ValueSize: 8, Batch: 1000, Gets: 4_000_000,
		Goroutines: 2}, Command: "peerbench -keys 10000000", Machine: "go1.26 linux/amd64"}, results)
	out := b.String()
	for _, want := range []string{
		"### 10,000,000 keys of 16 bytes, values of 8 bytes",
		"| engine | puts/s | gets/s | miss/s | RssAnon | RAM B/key | disk B/key | restart | config |",
		"| marlin | 1.82M | 3.26M | 6.87M | 112 MiB | 11.2 | 40.0 | 95 ms | SyncNone |",
		"| pebble | failed: build: exit status 1: a \\| b c | | | | | | | - |",
		"| map | 999 | 12.3k | 1 | 1.0 GiB | 100.0 | n/a | n/a | map |",
		"- **marlin** local: the config.",
		"- **pebble**: did not run (build: exit status 1: a \\| b c).",
		"4,000,000 random gets",
		"Command: `peerbench -keys 10000000` on go1.26 linux/amd64",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestModuleVersion(t *testing.T) {
	if v := ModuleVersion("std"); !strings.HasPrefix(v, "go") {
		t.Errorf("std version %q", v)
	}
	if v := ModuleVersion("example.com/not/a/dependency"); v != "unknown" {
		t.Errorf("version of a module not built in: %q", v)
	}
}
