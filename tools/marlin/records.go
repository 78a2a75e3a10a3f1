package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// dumpRecords lists the raw records of one segment file (dump --records).
// It reads the file only; no lock is taken, so the active segment of a
// running writer can be listed too (its unflushed tail is not in the file
// yet, and a record being written may show as damage at the end).
func dumpRecords(path string, stdout io.Writer) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--records takes a segment file (such as %s), not a directory",
			filepath.Join(path, segment.FileName(1)))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out := bufferedOut(stdout)
	fmt.Fprintf(out, "segment %s: %s bytes\n", path, comma(int64(len(data))))
	gen, nameOK := segment.ParseFileName(filepath.Base(path))
	h, herr := segment.DecodeHeader(data)
	switch {
	case herr == nil:
		fmt.Fprintf(out, "header: format %d, id %d, generation %d, database tag %#08x\n", segment.FormatVersion, h.ID, h.Generation, h.DBTag)
		if nameOK && gen != h.Generation {
			fmt.Fprintf(out, "header: WARNING: the file name says generation %d; records are checked with the header's\n", gen)
		}
		gen = h.Generation
	case nameOK:
		fmt.Fprintf(out, "header: BAD %s (checking records with generation %d from the file name)\n", reason(herr), gen)
	default:
		out.Flush()
		return fmt.Errorf("%s: bad header (%s) and the file name is not a segment name: cannot tell the generation the records are checked with", path, reason(herr))
	}
	fmt.Fprintf(out, "%10s %7s  %-6s %10s  %-5s %5s %8s  %-20s  %-3s  %s\n",
		"offset", "size", "kind", "seq", "flags", "klen", "vlen", "expiry", "crc", "key / note")
	lim := segment.Limits{MaxKey: segment.MaxKeyLen, MaxValue: segment.MaxSegmentSize}
	probs := segment.Check(data, gen, lim, nil)
	var counts [5]int64
	var damaged int64
	pi := 0
	flushProblems := func(before int64) {
		for ; pi < len(probs) && probs[pi].Offset < before; pi++ {
			p := probs[pi]
			damaged += p.Resume - p.Offset
			fmt.Fprintf(out, "%10d %7d  %-6s %s (resumes at %d)\n", p.Offset, p.Resume-p.Offset, "BAD", p.Reason, p.Resume)
		}
	}
	var note []byte
	segment.Check(data, gen, lim, func(off int64, r *segment.Record, size int) {
		flushProblems(off)
		if int(r.Kind) < len(counts) {
			counts[r.Kind]++
		}
		flags := "-"
		if r.Flags&segment.FlagBatch != 0 {
			flags = "batch"
		}
		exp := "-"
		if r.Expiry != 0 {
			exp = time.UnixMilli(r.Expiry).UTC().Format(time.RFC3339)
		}
		note = recordNote(note[:0], r)
		fmt.Fprintf(out, "%10d %7d  %-6s %10d  %-5s %5d %8d  %-20s  %-3s  %s\n",
			off, size, kindName(r.Kind), r.Seq, flags, len(r.Key), len(r.Value), exp, "ok", note)
	})
	flushProblems(int64(len(data)) + 1)
	damage := "no damage"
	if len(probs) > 0 {
		damage = fmt.Sprintf("%s (%s bytes)", plural(int64(len(probs)), "damaged stretch", "damaged stretches"), comma(damaged))
	}
	fmt.Fprintf(out, "%s: %s put, %s delete, %s batch commit, %s sync mark; %s\n",
		plural(counts[1]+counts[2]+counts[3]+counts[4], "record", "records"),
		comma(counts[segment.KindPut]), comma(counts[segment.KindDelete]),
		comma(counts[segment.KindBatchCommit]), comma(counts[segment.KindSyncMark]), damage)
	return out.Flush()
}

func kindName(k segment.Kind) string {
	switch k {
	case segment.KindPut:
		return "put"
	case segment.KindDelete:
		return "delete"
	case segment.KindBatchCommit:
		return "commit"
	case segment.KindSyncMark:
		return "mark"
	}
	return fmt.Sprintf("kind%d", k)
}

// recordNote is the last column: the key (escaped, cut at 48 bytes), or
// what a commit or a sync mark says.
func recordNote(dst []byte, r *segment.Record) []byte {
	switch r.Kind {
	case segment.KindBatchCommit, segment.KindSyncMark:
		n, k := binary.Uvarint(r.Value)
		if k <= 0 {
			return append(dst, "(bad value)"...)
		}
		if r.Kind == segment.KindBatchCommit {
			return fmt.Appendf(dst, "commits %d records", n)
		}
		return fmt.Appendf(dst, "synced up to offset %d", n)
	}
	const maxShown = 48
	if len(r.Key) > maxShown {
		return append(appendEscaped(dst, r.Key[:maxShown]), "..."...)
	}
	return appendEscaped(dst, r.Key)
}

// reason is a corruption error's reason without the file and offset.
func reason(err error) string {
	if ce, ok := err.(*segment.CorruptError); ok {
		return ce.Reason
	}
	return err.Error()
}
