package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

const inspectHelp = `Summarizes DIR: segment format, segments with their size and live share,
key count, index load factor and memory, the index snapshot's age and how
much of the log it covers, disk use, and the memory an Open of DIR takes.
DIR is opened read-only (the figures are those of that open).`

// inspectReport is what inspect prints (--json prints it as is).
type inspectReport struct {
	Dir           string `json:"dir"`
	FormatVersion int    `json:"format_version"`
	DatabaseID    string `json:"database_id"` // from the MARLIN file
	Keys          int64  `json:"keys"`
	Index         struct {
		Entries       int64   `json:"entries"`
		Capacity      int64   `json:"capacity"`
		LoadFactor    float64 `json:"load_factor"`
		ResidentBytes int64   `json:"resident_bytes"`
		LiveBytes     int64   `json:"live_bytes"`
	} `json:"index"`
	Segments     []inspectSegment `json:"segments"`
	SegmentBytes int64            `json:"segment_bytes"`
	LiveBytes    int64            `json:"live_bytes"`
	DeadBytes    int64            `json:"dead_bytes"`
	Snapshot     *inspectSnapshot `json:"snapshot"`       // null: none
	Base         *engine.BaseInfo `json:"base,omitempty"` // the base bundle under the database; absent: none
	Open         struct {
		FromSnapshot    bool    `json:"from_snapshot"`
		RecordsReplayed int64   `json:"records_replayed"`
		Seconds         float64 `json:"seconds"`
	} `json:"open"`
	Disk struct {
		Total     int64 `json:"total_bytes"`
		Segments  int64 `json:"segment_bytes"`
		Snapshots int64 `json:"snapshot_bytes"`
		Other     int64 `json:"other_bytes"`
	} `json:"disk"`
	// RAMToOpen estimates the memory a process needs to open DIR: the
	// index's resident slots, the write buffer and the index's shard headers.
	// Segment data is read through mmap and lives in the page cache.
	RAMToOpen    int64 `json:"ram_to_open_bytes"`
	WriteBuffer  int64 `json:"write_buffer_bytes"`
	ShardHeaders int64 `json:"index_shard_header_bytes"`
}

type inspectSegment struct {
	Name       string  `json:"name"`
	ID         uint16  `json:"id"`
	Generation uint64  `json:"generation"`
	Size       int64   `json:"size_bytes"`
	LiveBytes  int64   `json:"live_bytes"`
	DeadBytes  int64   `json:"dead_bytes"`
	LiveShare  float64 `json:"live_share"` // live / (live + dead)
	Sealed     bool    `json:"sealed"`
}

type inspectSnapshot struct {
	File       string    `json:"file"`
	Created    time.Time `json:"created"`
	AgeSeconds float64   `json:"age_seconds"`
	Entries    uint64    `json:"entries"`
	// The snapshot covers the log up to Durable; Open replays from Replay.
	ReplayFrom    string  `json:"replay_from"` // "segment@offset"
	CoveredUpTo   string  `json:"covered_up_to"`
	ReplayBytes   int64   `json:"replay_bytes"` // log bytes after the replay position
	CoveredShare  float64 `json:"covered_share"`
	UsedByOpen    bool    `json:"used_by_open"`
	SegmentsNamed int     `json:"segments"`
}

func runInspect(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("inspect", "[flags] DIR\n\n"+inspectHelp, "marlin inspect --json /var/lib/app/db | jq .keys", stderr)
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	dir := pos[0]
	db, err := openReadOnly(dir, stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	st, err := db.Stats()
	if err != nil {
		return err
	}
	rep, err := buildInspect(dir, st, time.Now())
	if err != nil {
		return err
	}
	rep.DatabaseID = db.ID().String()
	if b := db.Base(); b.Path != "" {
		rep.Base = &b
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	writeInspect(stdout, rep)
	return nil
}

func buildInspect(dir string, st engine.Stats, now time.Time) (*inspectReport, error) {
	rep := &inspectReport{Dir: dir, FormatVersion: segment.FormatVersion, Keys: st.Keys}
	rep.Index.Entries, rep.Index.Capacity = st.Index.Entries, st.Index.Capacity
	rep.Index.LoadFactor = st.Index.LoadFactor
	rep.Index.ResidentBytes, rep.Index.LiveBytes = st.Index.ResidentBytes, st.Index.LiveBytes
	rep.Segments = []inspectSegment{}
	for _, s := range st.Segments {
		is := inspectSegment{Name: segName(s.Name), ID: s.ID, Generation: s.Generation, Size: s.Size,
			LiveBytes: s.LiveBytes, DeadBytes: s.DeadBytes, Sealed: s.Sealed}
		if t := s.LiveBytes + s.DeadBytes; t > 0 {
			is.LiveShare = float64(s.LiveBytes) / float64(t)
		}
		rep.Segments = append(rep.Segments, is)
		rep.SegmentBytes += s.Size
	}
	rep.LiveBytes, rep.DeadBytes = st.LiveBytes, st.DeadBytes
	rep.Open.FromSnapshot = st.OpenedFromSnapshot
	rep.Open.RecordsReplayed = st.RecordsReplayed
	rep.Open.Seconds = st.OpenTime.Seconds()
	rep.WriteBuffer = st.ArenaBytes - st.Index.ResidentBytes
	rep.ShardHeaders = st.Index.ShardBytes
	rep.RAMToOpen = st.ArenaBytes + st.Index.ShardBytes

	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		n := fi.Size()
		rep.Disk.Total += n
		switch {
		case strings.HasSuffix(e.Name(), ".seg"):
			rep.Disk.Segments += n
		case strings.HasSuffix(e.Name(), ".idx"):
			rep.Disk.Snapshots += n
		default:
			rep.Disk.Other += n
		}
	}

	si, err := engine.ReadSnapshotInfo(vfs.Default, dir)
	if err != nil {
		// A damaged snapshot is worth showing, not failing over: Open
		// ignored it and replayed the log.
		rep.Snapshot = &inspectSnapshot{File: "(unreadable: " + err.Error() + ")"}
		return rep, nil
	}
	if si != nil {
		rep.Snapshot = snapshotCoverage(si, st, now)
	}
	return rep, nil
}

// snapshotCoverage works out how much of the log the snapshot covers: Open
// loads it, then replays the log from its replay position.
func snapshotCoverage(si *engine.SnapshotInfo, st engine.Stats, now time.Time) *inspectSnapshot {
	created := si.Created.UTC()
	s := &inspectSnapshot{File: segName(si.File), Created: created, AgeSeconds: now.Sub(created).Seconds(),
		Entries: si.Entries, SegmentsNamed: si.Segments, UsedByOpen: st.OpenedFromSnapshot,
		ReplayFrom:  fmt.Sprintf("%s@%d", segment.FileName(si.ReplayGen), si.ReplayOffset),
		CoveredUpTo: fmt.Sprintf("%s@%d", segment.FileName(si.DurableGen), si.DurableOffset)}
	var logBytes int64
	for _, seg := range st.Segments {
		n := seg.Size - segment.HeaderSize
		logBytes += n
		switch {
		case seg.Generation > si.ReplayGen:
			s.ReplayBytes += n
		case seg.Generation == si.ReplayGen:
			s.ReplayBytes += max(seg.Size-si.ReplayOffset, 0)
		}
	}
	if !st.OpenedFromSnapshot {
		s.ReplayBytes = logBytes
	}
	if logBytes > 0 {
		s.CoveredShare = 1 - float64(s.ReplayBytes)/float64(logBytes)
	} else {
		s.CoveredShare = 1
	}
	return s
}

func writeInspect(w io.Writer, r *inspectReport) {
	p := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-13s "+format+"\n", append([]any{label}, args...)...)
	}
	p("directory", "%s", r.Dir)
	p("format", "segment format version %d", r.FormatVersion)
	p("database", "id %s", r.DatabaseID)
	p("keys", "%s (expired keys not yet reclaimed included)", comma(r.Keys))
	if b := r.Base; b != nil {
		p("base", "%s: %s pairs, %s, built %s (the keys above are the delta's)", b.Path, comma(b.Pairs), ibytes(b.Bytes), b.Built.UTC().Format(time.RFC3339))
	}
	p("index", "load factor %.2f (%s entries in %s slots), %s resident, %s in live slot blocks",
		r.Index.LoadFactor, comma(r.Index.Entries), comma(r.Index.Capacity), ibytes(r.Index.ResidentBytes), ibytes(r.Index.LiveBytes))
	p("segments", "%d, %s; live %s (%s), dead %s",
		len(r.Segments), ibytes(r.SegmentBytes), ibytes(r.LiveBytes), pct(r.LiveBytes, r.LiveBytes+r.DeadBytes), ibytes(r.DeadBytes))
	if len(r.Segments) > 0 {
		fmt.Fprintf(w, "%-13s %-20s %4s %10s %10s %7s  %s\n", "", "name", "id", "size", "live", "live%", "state")
		for i, s := range r.Segments {
			state := "sealed"
			switch {
			case !s.Sealed:
				state = "active"
			case i == len(r.Segments)-1:
				state = "newest" // a writer appends to it
			}
			fmt.Fprintf(w, "%-13s %-20s %4d %10s %10s %7s  %s\n", "", s.Name, s.ID, ibytes(s.Size), ibytes(s.LiveBytes),
				pct(s.LiveBytes, s.LiveBytes+s.DeadBytes), state)
		}
	}
	switch s := r.Snapshot; {
	case s == nil:
		p("snapshot", "none: every Open replays the whole log")
	case s.Created.IsZero():
		p("snapshot", "%s", s.File)
	default:
		age := time.Duration(s.AgeSeconds * float64(time.Second)).Round(time.Second)
		p("snapshot", "%s: %s entries, created %s (%s ago)", s.File, comma(int64(s.Entries)), s.Created.Format(time.RFC3339), age)
		if s.UsedByOpen {
			p("", "covers the log up to %s; Open replays from %s: %s (%.1f%% of the log covered)",
				s.CoveredUpTo, s.ReplayFrom, ibytes(s.ReplayBytes), 100*s.CoveredShare)
		} else {
			p("", "NOT used by Open (stale or damaged): the whole log is replayed")
		}
	}
	how := "replayed the whole log"
	if r.Open.FromSnapshot {
		how = "loaded the snapshot"
	}
	p("open", "%s, replayed %s records, in %s", how, comma(r.Open.RecordsReplayed),
		time.Duration(r.Open.Seconds*float64(time.Second)).Round(10*time.Microsecond))
	p("disk use", "%s (segments %s, snapshots %s, other %s)",
		ibytes(r.Disk.Total), ibytes(r.Disk.Segments), ibytes(r.Disk.Snapshots), ibytes(r.Disk.Other))
	p("RAM to open", "about %s: index %s, write buffer %s, index shard headers %s",
		ibytes(r.RAMToOpen), ibytes(r.Index.ResidentBytes), ibytes(r.WriteBuffer), ibytes(r.ShardHeaders))
	p("", "(segment data is read through mmap, from the page cache, on top of that)")
}
