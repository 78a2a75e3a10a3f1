package engine

import (
	"errors"

	"github.com/marlinkv/marlin/segment"
)

// Salvage: a read-only Open that skips damage instead of failing.
//
// With Options.Salvage (and ReadOnly), replaySegment hands a scan that
// stopped at damage to salvageScan, which replays the rest of the segment
// record by record, noting each damaged range and resuming at the next
// aligned offset where a record decodes (as segment.Check does). Nothing on
// disk is modified. This is the only change to recovery for salvage (one
// branch in replaySegment); everything else about replay is unchanged.

// SalvageSkip is one damaged range a salvaging Open skipped.
type SalvageSkip struct {
	File   string // the segment file
	Offset int64  // where the unreadable data starts
	Resume int64  // where the replay resumed (the file's size if nowhere)
	Reason string // why it could not be read
}

// Salvaged lists the damaged ranges a salvaging Open (Options.Salvage)
// skipped, in replay order. The slice belongs to the DB; do not modify it.
func (db *DB) Salvaged() []SalvageSkip { return db.salvaged }

// salvageScan continues a segment scan that stopped with err (at end, the
// end of the last committed unit). From end on it decodes the records one
// by one and replays each put and delete on its own, whether or not it is
// part of a batch (a batch whose commit record was damaged, or whose first
// records were, still yields its readable records: salvage keeps every
// readable record, at the cost of batch atomicity). A record that does
// not decode starts a damaged range, which ends at the next aligned offset
// where a record decodes. It returns the segment's size and nil, or an
// error that is not damage.
func (db *DB) salvageScan(sf *segFile, data []byte, end int64, err error, acct int64) (int64, error) {
	var ce *segment.CorruptError
	if !errors.As(err, &ce) {
		return end, err
	}
	size := int64(len(data))
	var one [1]segment.Entry
	for off := end; off < size; {
		r, n, derr := segment.Decode(data[off:], sf.gen, off, db.lim)
		if derr != nil {
			resume := nextDecodable(data, sf.gen, db.lim, off)
			reason := derr.Error()
			if errors.As(derr, &ce) {
				reason = ce.Reason
			}
			db.salvaged = append(db.salvaged, SalvageSkip{File: sf.name, Offset: off, Resume: resume, Reason: reason})
			db.opts.Logger.Warn("marlin: salvage: skipping damaged data", "file", sf.name, "offset", off, "resume", resume, "reason", reason)
			off = resume
			continue
		}
		if r.Kind == segment.KindPut || r.Kind == segment.KindDelete {
			one[0] = segment.Entry{Off: off, Size: n, Rec: r}
			if err := db.replayUnit(sf, one[:], acct); err != nil {
				return off, err
			}
		}
		off += int64(n)
	}
	return size, nil
}

// nextDecodable returns the first aligned offset after off where a record
// decodes, or len(data).
func nextDecodable(data []byte, gen uint64, lim segment.Limits, off int64) int64 {
	for next := (off + segment.Align) &^ (segment.Align - 1); next < int64(len(data)); next += segment.Align {
		if _, _, err := segment.Decode(data[next:], gen, next, lim); err == nil {
			return next
		}
	}
	return int64(len(data))
}
