package peers

import (
	"fmt"
	"io"
	"strings"

	"github.com/dustin/go-humanize"
)

// Header describes a run for the table's caption.
type Header struct {
	Config         // the workload (Dir and Progress unused)
	Command string // the command line that produced the table
	Machine string // Go version, OS, CPUs, memory
}

// WriteTable writes one markdown table with a row per result (a failed
// engine's row carries its error), followed by how each engine was
// configured and how the figures were measured.
func WriteTable(w io.Writer, h Header, results []*Result) {
	fmt.Fprintf(w, "### %s keys of %d bytes, values of %d bytes\n\n", humanize.Comma(int64(h.Keys)), h.KeySize, h.ValueSize)
	fmt.Fprintln(w, "| engine | puts/s | gets/s | miss/s | RssAnon | RAM B/key | disk B/key | restart | config |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range results {
		if r.Error != "" {
			config := cell(r.Short)
			if config == "" {
				config = "-"
			}
			fmt.Fprintf(w, "| %s | failed: %s | | | | | | | %s |\n", r.Engine, cell(r.Error), config)
			continue
		}
		restart, disk := secs(r.RestartSecs), fmt.Sprintf("%.1f", r.DiskPerKey)
		if r.RestartSecs == 0 && r.DiskBytes == 0 {
			restart, disk = "n/a", "n/a"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.1f | %s | %s | %s |\n", r.Engine,
			rate(r.PutsPerSec), rate(r.GetsPerSec), rate(r.MissPerSec),
			humanize.IBytes(uint64(max(r.RSSAnon, 0))), r.RAMPerKey, disk, restart, cell(r.Short))
	}
	fmt.Fprintf(w, "\nLoad: %s records in batches of %d from one goroutine, no fsync per batch (keys and values from bench.Key and bench.Value: "+
		"random-looking keys, incompressible values); puts/s counts the load alone. Stores that compact in the background "+
		"(Pebble, Badger) are then left to finish (the notes give how long) so the gets measure the store at rest. Then %s random gets of present keys and %s of absent keys from %d goroutines; "+
		"every answer is checked. Each engine runs in its own process, built with only that engine. RssAnon is read after the gets "+
		"(caches warm), after a GC that returns free memory to the OS; RAM B/key is its growth since before Open over the keys. "+
		"RssAnon leaves out the page cache, which serves Marlin's segments, bbolt's file and Badger's tables through mmap. "+
		"Restart is the time to reopen the closed store; disk is the files' allocated bytes after that reopen and a second Close "+
		"(files at rest: Pebble, for one, deletes its obsolete preallocated WAL files only at open).\n",
		humanize.Comma(int64(h.Keys)), h.Batch, humanize.Comma(h.Gets), humanize.Comma(h.Gets), h.Goroutines)
	fmt.Fprintln(w, "\nHow each engine is configured:")
	fmt.Fprintln(w)
	for _, r := range results {
		load := ""
		if r.LoadAvg > 0 {
			load = fmt.Sprintf(" Host load average at the end of its run: %.1f.", r.LoadAvg)
		}
		switch {
		case r.Config != "" && r.SettleSecs > 0:
			fmt.Fprintf(w, "- **%s** %s: %s. After the load, its background compactions ran another %s before the gets began.%s\n",
				r.Engine, r.Version, r.Config, secs(r.SettleSecs), load)
		case r.Config != "":
			fmt.Fprintf(w, "- **%s** %s: %s.%s\n", r.Engine, r.Version, r.Config, load)
		default:
			fmt.Fprintf(w, "- **%s**: did not run (%s).\n", r.Engine, cell(r.Error))
		}
	}
	if h.Command != "" {
		fmt.Fprintf(w, "\nCommand: `%s`", h.Command)
		if h.Machine != "" {
			fmt.Fprintf(w, " on %s", h.Machine)
		}
		fmt.Fprintln(w)
	}
}

// cell makes s safe inside a markdown table cell, on one line.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// rate formats operations per second with three significant digits.
func rate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.3gM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.3gk", x/1e3)
	}
	return fmt.Sprintf("%.3g", x)
}

func secs(s float64) string {
	switch {
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.0f ms", s*1e3)
	}
	return fmt.Sprintf("%.0f µs", s*1e6)
}
