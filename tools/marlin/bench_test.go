package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBenchCommandJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	dir := t.TempDir()
	code := run([]string{"bench", "--keys", "3000", "--ops", "2000", "--workload", "mixed", "--mix", "60:30:10",
		"--dist", "zipfian", "--key-size", "10", "--key-max", "30", "--value-size", "4", "--value-max", "64",
		"--goroutines", "3", "--batch", "50", "--sync", "group", "--segment-size", "131072", "--seed", "9",
		"--dir", dir, "--verify", "--json"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	var rep struct {
		Workload   string `json:"workload"`
		Dist       string `json:"distribution"`
		Mix        string `json:"mix"`
		Keys       uint64 `json:"keys"`
		Goroutines int    `json:"goroutines"`
		BatchSize  int    `json:"batch_size"`
		Sync       string `json:"sync"`
		KeyMin     int    `json:"key_min"`
		KeyMax     int    `json:"key_max"`
		ValueMin   int    `json:"value_min"`
		ValueMax   int    `json:"value_max"`
		Seed       uint64 `json:"seed"`
		Dir        string `json:"dir"`
		Errors     int64  `json:"errors"`
		Verified   bool   `json:"verified"`
		KeysInDB   int64  `json:"keys_in_db"`
		Phases     []struct {
			Name    string `json:"name"`
			Ops     int64  `json:"ops"`
			Latency map[string]struct {
				Count int64 `json:"count"`
				P99   int64 `json:"p99_ns"`
			} `json:"latency"`
		} `json:"phases"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Equal(t, "mixed", rep.Workload)
	require.Equal(t, "zipfian", rep.Dist)
	require.Equal(t, "60:30:10", rep.Mix)
	require.Equal(t, uint64(3000), rep.Keys)
	require.Equal(t, 3, rep.Goroutines)
	require.Equal(t, 50, rep.BatchSize)
	require.Equal(t, "group", rep.Sync)
	require.Equal(t, []int{10, 30, 4, 64}, []int{rep.KeyMin, rep.KeyMax, rep.ValueMin, rep.ValueMax})
	require.Equal(t, uint64(9), rep.Seed)
	require.Equal(t, dir, rep.Dir)
	require.Zero(t, rep.Errors)
	require.True(t, rep.Verified)
	require.Less(t, rep.KeysInDB, int64(3000))
	require.Len(t, rep.Phases, 3)
	require.Equal(t, "run mixed", rep.Phases[1].Name)
	require.Equal(t, int64(2000), rep.Phases[1].Ops)
	require.Positive(t, rep.Phases[1].Latency["delete"].Count)
	require.Positive(t, rep.Phases[1].Latency["read"].P99)
}

func TestBenchCommandText(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"bench", "--keys", "1000", "--ops", "500", "--workload", "a", "--quiet"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Contains(t, out.String(), "marlin bench: workload a, scrambled distribution, 1,000 keys of 16 bytes")
	require.Contains(t, out.String(), "run a")
	require.Empty(t, errOut.String(), "--quiet prints no progress")
}

func TestBenchCommandErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--value-size", "100", "--value-max", "50"},
		{"--key-size", "20", "--key-max", "10"},
		{"--workload", "zz"},
		{"--dist", "gauss"},
		{"--mix", "1:2"},
		{"--sync", "sometimes"},
		{"--nope"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		code := run(append([]string{"bench", "--keys", "10", "--ops", "1", "--quiet"}, args...), &out, &errOut)
		require.NotEqual(t, 0, code, "%q", args)
		require.NotEmpty(t, errOut.String())
	}
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"bench", "--help"}, &out, &errOut))
	require.Contains(t, out.String(), "--value-max", "help asked for is on stdout")
	require.Contains(t, out.String(), "load, a, b, c, d, f, miss, iterate, mixed")
	require.Empty(t, errOut.String())
}

// TestBenchHTMLReport: --report writes a page that a real browser
// (headless Chromium, installed by .ci/deps) renders: after layout its DOM
// holds the charts and tables, with no error page.
func TestBenchHTMLReport(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	require.NoError(t, err, "headless Chromium renders the report: install it (.ci/deps does, as Debian's chromium)")
	page := filepath.Join(t.TempDir(), "report.html")
	r := mustRun(t, "bench", "--keys", "20000", "--duration", "1s", "--quiet", "--report", page)
	require.Contains(t, r.stdout, "run b")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+page)
	out, err := cmd.Output()
	require.NoError(t, err, "chromium failed")
	dom := string(out)
	require.Contains(t, dom, "<title>marlin bench: b</title>")
	require.Equal(t, 2, strings.Count(dom, "<polyline"), "a rate chart for the load and the run")
	require.GreaterOrEqual(t, strings.Count(dom, "<rect"), 10, "latency bars for the load's batches and the run's gets and puts")
	require.Contains(t, dom, `id="phases"`)
	require.NotContains(t, dom, "ERR_", "no browser error page")
}
