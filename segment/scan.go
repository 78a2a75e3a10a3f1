package segment

import "encoding/binary"

// Entry is one decoded record and where it lies.
type Entry struct {
	Off  int64  // offset of the record in its segment
	Size int    // aligned size
	Rec  Record // the record (aliasing the scanned data)
}

// Scan decodes the records in data (a whole segment file, header
// included) from HeaderSize on, and calls fn with each committed unit: a
// single record, or all records of a batch once its commit record is read
// (the commit record itself is not passed). The entries passed to fn are
// reused after fn returns; their keys and values alias data.
//
// Scan stops at the end of data or at the first record that does not
// decode. It returns end, the offset just past the last committed unit, and
// the reason it stopped early: a *CorruptError (a bad record at its offset,
// or a batch without its commit at end) or fn's error. On a clean stop err is
// nil and end >= len(data) (end exceeds len(data) only when the last record's
// zero padding was cut off).
func Scan(data []byte, gen uint64, lim Limits, fn func([]Entry) error) (end int64, err error) {
	return ScanFrom(data, gen, lim, HeaderSize, fn)
}

// ScanFrom is Scan starting at offset from, which must be the start of a
// record outside any batch (recovery after an index snapshot replays from
// the position the snapshot covers).
func ScanFrom(data []byte, gen uint64, lim Limits, from int64, fn func([]Entry) error) (end int64, err error) {
	var pending []Entry
	var one [1]Entry
	off := from
	end = off
	for off < int64(len(data)) {
		r, size, err := Decode(data[off:], gen, off, lim)
		if err != nil {
			return end, err
		}
		e := Entry{Off: off, Size: size, Rec: r}
		switch {
		case r.Kind == KindSyncMark:
			// Not data; may sit between a batch's records.
			if len(pending) == 0 {
				end = off + int64(size)
			}
		case r.Kind == KindBatchCommit:
			n, k := binary.Uvarint(r.Value)
			if k <= 0 || n != uint64(len(pending)) || len(pending) == 0 {
				return end, corruptf(off, "batch commit for %d records follows %d batch records", n, len(pending))
			}
			if err := fn(pending); err != nil {
				return end, err
			}
			pending = pending[:0]
			end = off + int64(size)
		case r.Flags&FlagBatch != 0:
			pending = append(pending, e)
		default:
			if len(pending) > 0 {
				return end, corruptf(off, "record inside an uncommitted batch")
			}
			one[0] = e
			if err := fn(one[:]); err != nil {
				return end, err
			}
			end = off + int64(size)
		}
		off += int64(size)
	}
	if len(pending) > 0 {
		return end, corruptf(end, "batch of %d records without its commit record", len(pending))
	}
	return end, nil
}

// SyncedClaim returns the largest offset that a valid sync mark found at an
// aligned offset after from says was durable when the mark was written, or
// 0. Recovery uses it to tell a torn tail from damage in synced data: damage
// at an offset below a later mark's claim was in data that had been fsynced,
// so it is corruption, not a torn write.
func SyncedClaim(data []byte, gen uint64, lim Limits, from int64) int64 {
	var claim int64
	for off := (from + Align) &^ (Align - 1); off+fixedHeader < int64(len(data)); off += Align {
		if Kind(data[off+11]&0xf) != KindSyncMark {
			continue // cheap reject before the checksum
		}
		r, _, err := Decode(data[off:], gen, off, lim)
		if err != nil {
			continue
		}
		if v, k := binary.Uvarint(r.Value); k > 0 && int64(v) > claim {
			claim = int64(v)
		}
	}
	return claim
}

// EncodeCommit returns the value of a batch commit record for n records.
func EncodeCommit(n int) []byte {
	return binary.AppendUvarint(nil, uint64(n))
}

// EncodeSyncMark returns the value of a sync mark claiming off is durable.
func EncodeSyncMark(off int64) []byte {
	return binary.AppendUvarint(nil, uint64(off))
}
