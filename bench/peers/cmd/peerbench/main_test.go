package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marlinkv/marlin/bench/peers"
)

func TestParentBuildsAndRunsChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("builds child binaries")
	}
	var out, errOut bytes.Buffer
	jsonFile := filepath.Join(t.TempDir(), "results.json")
	code := run([]string{"-engines", "marlin,map", "-keys", "3000", "-gets", "3000", "-value-size", "20",
		"-dir", t.TempDir(), "-json", jsonFile}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	table := out.String()
	for _, want := range []string{"### 3,000 keys of 16 bytes, values of 20 bytes", "| marlin | ", "| map | ",
		"- **marlin** local (../..): ", "- **map** go1."} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "failed") {
		t.Errorf("a row failed:\n%s\n%s", table, errOut.String())
	}
	var got struct {
		Command string          `json:"command"`
		Results []*peers.Result `json:"results"`
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != 2 || got.Results[0].Engine != "marlin" || got.Results[0].GetsPerSec <= 0 ||
		got.Results[0].DiskBytes <= 0 || got.Results[1].Engine != "map" || got.Results[1].Errors != 0 {
		t.Errorf("results %+v", got.Results)
	}
	if !strings.Contains(got.Command, "-keys 3000") {
		t.Errorf("command %q", got.Command)
	}
}

// Failures become rows: a child that does not build, one that is killed by
// the timeout, one that exits without a result.
func TestFailuresBecomeRows(t *testing.T) {
	cases := map[string][]string{
		"build":   {"-pkg", "example.com/no/such/package"},
		"killed":  {"-timeout", "1ms"},
		"crashes": {"-children", "self"}, // the test binary rejects -child
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"-engines", "map,bbolt", "-keys", "100", "-gets", "100",
				"-dir", t.TempDir()}, args...), &out, &errOut)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut.String())
			}
			for _, e := range []string{"map", "bbolt"} {
				if !strings.Contains(out.String(), "| "+e+" | failed: ") {
					t.Errorf("no failed row for %s:\n%s", e, out.String())
				}
			}
		})
	}
}

func TestChildWithoutEngine(t *testing.T) {
	missing := ""
	for _, e := range peers.All {
		if _, ok := peers.Lookup(e); !ok {
			missing = e
		}
	}
	if missing == "" {
		t.Skip("every engine is built in (-tags peer_all)")
	}
	dir := t.TempDir()
	outFile := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	code := run([]string{"-child", missing, "-dir", filepath.Join(dir, "data"), "-out", outFile, "-keys", "10"},
		&out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var res peers.Result
	data, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Error, "not built into this binary") || res.Engine != missing {
		t.Errorf("result %+v", res)
	}
}

func TestChildRunsBuiltInEngine(t *testing.T) {
	dir := t.TempDir()
	outFile := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	prof := filepath.Join(dir, "map.cpu.prof")
	code := run([]string{"-child", "map", "-dir", filepath.Join(dir, "data"), "-out", outFile, "-keys", "1000",
		"-gets", "1000", "-cpuprofile", prof}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var res peers.Result
	data, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil || res.Errors != 0 || res.GetsPerSec <= 0 {
		t.Errorf("result %+v, %v", res, err)
	}
	if out.Len() != 0 {
		t.Errorf("the child wrote to stdout: %q", out.String())
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-engines", "rocksdb"}, {"-children", "maybe"}, {"-nope"}, {"extra"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
}
