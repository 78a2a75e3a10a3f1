package engine

import (
	"encoding/binary"

	"github.com/marlinkv/marlin/segment"
)

// Index prefetch for log-order walks. Each pair a walk yields is checked
// against the index (is this record the key's live one?): a random access
// into an index of many GB, a cache and TLB miss of several hundred ns,
// which made a walk of 10^9 pairs CPU-bound at 0.86 M pairs/s. The walk
// already holds the next records in its read buffer, so it peeks at the
// keys of up to scanPrefetch records ahead, hashes them and touches their
// index slots together (index.Prefetch): the misses overlap instead of
// following one another.

// scanPrefetch is how many records ahead a walk touches the index.
const scanPrefetch = 16

// prefetchState is a logScan's progress in prefetching: the segment and
// offset up to which records were prefetched, and the offset at which the
// next batch is due (half-way through the last one).
type prefetchState struct {
	seg       int
	upTo, due int64
	hs        [scanPrefetch]uint64
}

// prefetch touches the index slots of the records ahead of s.off in the
// read buffer, a batch at a time. Records are only peeked at (not checked:
// a garbage header stops the batch); what they say only decides which
// cache lines are loaded.
func (s *logScan) prefetch() {
	p := &s.pf
	if p.seg != s.si || p.upTo < s.off {
		p.seg, p.upTo, p.due = s.si, s.off, s.off
	}
	if s.off < p.due || s.si >= len(s.segs) {
		return
	}
	end := min(s.bufOff+int64(len(s.buf)), s.segs[s.si].end)
	n := 0
	off := p.upTo
	for n < scanPrefetch && off < end {
		b := s.buf[off-s.bufOff : end-s.bufOff]
		key, span := peekPutKey(b)
		if span == 0 || int64(span) > int64(len(b)) {
			break
		}
		if key != nil {
			p.hs[n] = s.db.hash(key)
			n++
		}
		off += int64(span)
		if n == scanPrefetch/2 {
			p.due = off
		}
	}
	if n < scanPrefetch/2 {
		p.due = off
	}
	p.upTo = off
	if n > 0 {
		s.db.ix.Prefetch(p.hs[:n])
	}
}

// peekPutKey returns the key of the put record whose header starts b (nil
// for other kinds) and the record's aligned size, or span 0 if b does not
// start with a header that parses or does not hold the key.
func peekPutKey(b []byte) (key []byte, span int) {
	span = recordSpan(b)
	if span == 0 || segment.Kind(b[11]&0xf) != segment.KindPut {
		return nil, span
	}
	p := 12
	klen, n := binary.Uvarint(b[p:])
	p += n
	_, n = binary.Uvarint(b[p:])
	p += n
	if b[11]>>4&segment.FlagExpiry != 0 {
		p += 8
	}
	if uint64(p)+klen > uint64(len(b)) {
		return nil, 0
	}
	return b[p : p+int(klen)], span
}
