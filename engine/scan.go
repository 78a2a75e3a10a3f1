package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// A log scan reads every record of the log in log order (segment by
// segment, oldest generation first, each from its header to its end) in
// large sequential reads through vfs.File.ReadAt, and the bytes still in
// the write buffer from the buffer. The iterator (iter.go) yields from it
// the records the index points at. Reading with pread rather than through
// the mapping keeps a cold scan from blocking an OS thread on every page
// fault and makes a failed read a plain error.
//
// Its extent is fixed when it starts, under db.mu: the segments that exist
// then, the sealed ones to their end and the active one to the end of its
// write buffer. Records appended later (writes, compaction's copies) lie
// beyond it and are never read. So that no record it has not read yet
// moves beyond its end, the scan pins the generations it has not finished
// (scanPin): compaction neither copies from a pinned segment nor retires
// one (compactRound, compactSegment, retireSegment check under db.mu), and
// a pinned segment's file stays open and its id stays its own.
// Segments the scan has finished are released at once, segment by
// segment, and compaction may rewrite them and the segments created after
// the scan started.

// scanChunk is the size of one sequential read.
const scanChunk = 2 << 20

// scanIOSkip is how far a scan skips past an offset whose bytes could not
// be read before it tries again.
const scanIOSkip = 64 << 10

// scanPin pins segment generations [from, to] against compaction. Guarded
// by db.mu (the set db.scans too).
type scanPin struct{ from, to uint64 }

// scanPinnedLocked reports whether a scan in progress pins generation gen.
// db.mu must be held.
func (db *DB) scanPinnedLocked(gen uint64) bool {
	for p := range db.scans {
		if gen >= p.from && gen <= p.to {
			return true
		}
	}
	return false
}

// scanSeg is one segment of a scan's extent: the scan reads [HeaderSize, end).
type scanSeg struct {
	sf  *segFile
	end int64
}

// damage is a stretch of a segment that could not be read or decoded:
// [from, to), to being where the next record that decodes starts.
type damage struct {
	from, to int64
	err      error // the first failure (wraps ErrCorrupt or ErrIO, names the file)
}

// logScan reads the log in order. Not safe for concurrent use; the
// iterator that owns it calls it inside an operation (db.enter).
type logScan struct {
	db    *DB
	pin   *scanPin // nil once released; guarded by db.mu
	segs  []scanSeg
	si    int   // current segment
	off   int64 // offset of the next record in segs[si]
	chunk int

	// buf holds bytes [bufOff, bufOff+len(buf)) of segs[si]. It is the
	// scan's own; a record next returns aliases it until the next call.
	buf    []byte
	bufOff int64

	dmg     []damage // damaged stretches of segs[si] found so far
	inDmg   bool     // in a damaged stretch: looking for a record that decodes
	dmgFrom int64
	dmgErr  error
	lastIO  bool // the last decode failed because bytes could not be read

	pf prefetchState // scan_prefetch.go
}

// startScan fixes a scan's extent and pins it. chunk <= 0 means scanChunk.
func (db *DB) startScan(chunk int) *logScan {
	if chunk <= 0 {
		chunk = scanChunk
	}
	s := &logScan{db: db, chunk: chunk, off: segment.HeaderSize}
	db.mu.Lock()
	defer db.mu.Unlock()
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil {
			continue
		}
		end := sf.flushed.Load()
		if sf == db.active && !db.opts.ReadOnly {
			// Under db.mu the write buffer holds whole records and
			// neither grows nor is flushed.
			end = db.tail.start + db.tail.n.Load()
		}
		s.segs = append(s.segs, scanSeg{sf: sf, end: end})
	}
	slices.SortFunc(s.segs, func(a, b scanSeg) int {
		switch {
		case a.sf.gen < b.sf.gen:
			return -1
		case a.sf.gen > b.sf.gen:
			return 1
		}
		return 0
	})
	if len(s.segs) > 0 {
		s.pin = &scanPin{from: s.segs[0].sf.gen, to: s.segs[len(s.segs)-1].sf.gen}
		if db.scans == nil {
			db.scans = map[*scanPin]struct{}{}
		}
		db.scans[s.pin] = struct{}{}
	}
	return s
}

// release unpins whatever the scan still pins. Safe to call twice, and
// from the iterator's cleanup (another goroutine): s.pin is guarded by
// db.mu.
func (s *logScan) release() {
	s.db.mu.Lock()
	if s.pin != nil {
		delete(s.db.scans, s.pin)
		s.pin = nil
	}
	s.db.mu.Unlock()
}

// next returns the next record of the log that decodes and its location
// (records of every kind), or io.EOF after the last one. When a segment
// with damaged stretches ends, onDamage is called with them before the
// segment is released; its error ends the scan.
func (s *logScan) next(onDamage func(sf *segFile, d []damage) error) (segment.Record, uint64, error) {
	for {
		if s.si >= len(s.segs) {
			s.release()
			return segment.Record{}, 0, io.EOF
		}
		sg := &s.segs[s.si]
		if s.off >= sg.end {
			if s.inDmg {
				s.dmg = append(s.dmg, damage{from: s.dmgFrom, to: sg.end, err: s.dmgErr})
				s.inDmg = false
			}
			if len(s.dmg) > 0 {
				if err := onDamage(sg.sf, s.dmg); err != nil {
					return segment.Record{}, 0, err
				}
			}
			s.nextSegment()
			continue
		}
		r, size, err := s.decode(sg)
		if err == nil {
			if s.inDmg {
				s.dmg = append(s.dmg, damage{from: s.dmgFrom, to: s.off, err: s.dmgErr})
				s.inDmg = false
			}
			loc := segment.Loc(sg.sf.id, s.off)
			s.off += int64(size)
			return r, loc, nil
		}
		if !s.inDmg {
			s.inDmg, s.dmgFrom, s.dmgErr = true, s.off, err
		}
		// Resume at the next aligned offset where a record decodes, as
		// segment.Check does; past bytes that could not be read, further
		// on (retrying every offset of an unreadable stretch would read
		// it again and again).
		step := int64(segment.Align)
		if s.lastIO {
			step = scanIOSkip
		}
		s.off = (s.off + step) &^ (segment.Align - 1)
	}
}

// nextSegment releases the current segment and moves to the next one.
func (s *logScan) nextSegment() {
	s.dmg, s.inDmg = s.dmg[:0], false
	s.si++
	s.off, s.buf, s.bufOff = segment.HeaderSize, s.buf[:0], 0
	s.db.mu.Lock()
	if s.pin != nil && s.si < len(s.segs) {
		s.pin.from = s.segs[s.si].sf.gen
	}
	s.db.mu.Unlock()
}

// decode decodes the record at s.off of sg, reading what it needs.
func (s *logScan) decode(sg *scanSeg) (segment.Record, int, error) {
	s.lastIO = false
	avail := sg.end - s.off
	if err := s.ensure(sg, min(segment.MaxHeader, avail)); err != nil {
		s.lastIO = true
		return segment.Record{}, 0, err
	}
	b := s.buf[s.off-s.bufOff:]
	// A record longer than what buf holds: read the rest (up to the end:
	// a torn write may have cut the last record's padding, which Decode
	// accepts). Reads stay consecutive (ensure keeps what it has). While
	// looking for a record after damage, where most candidates are
	// garbage, only by up to scanChunk more: a garbage length must not
	// grow the buffer to a whole segment.
	n := int64(recordSpan(b))
	if s.inDmg && n > int64(len(b))+scanChunk {
		n = 0
	}
	if n > int64(len(b)) && int64(len(b)) < avail {
		if err := s.ensure(sg, min(n, avail)); err != nil {
			s.lastIO = true
			return segment.Record{}, 0, err
		}
		b = s.buf[s.off-s.bufOff:]
	}
	r, size, err := segment.Decode(b, sg.sf.gen, s.off, s.db.lim)
	if err != nil {
		return r, 0, segment.WithFile(err, sg.sf.name)
	}
	return r, size, nil
}

// ensure makes buf hold at least need bytes from s.off on. When it does
// not, the bytes from s.off to the end of buf are kept (moved to the
// front) and the rest of a chunk (or of need bytes, if more) is read
// after them: the file is read in consecutive, non-overlapping reads.
func (s *logScan) ensure(sg *scanSeg, need int64) error {
	bufEnd := s.bufOff + int64(len(s.buf))
	if s.off >= s.bufOff && s.off+need <= bufEnd {
		return nil
	}
	want := min(max(int64(s.chunk), need), sg.end-s.off)
	kept := int64(0)
	if s.off >= s.bufOff && s.off < bufEnd {
		kept = bufEnd - s.off
	}
	var rest []byte // the bytes kept
	if kept > 0 {
		rest = s.buf[s.off-s.bufOff:]
	}
	if int64(cap(s.buf)) < want {
		nb := make([]byte, want)
		copy(nb, rest)
		s.buf = nb
	} else {
		copy(s.buf[:cap(s.buf)], rest)
	}
	n, err := s.readAt(sg.sf, s.buf[kept:want], s.off+kept)
	got := kept + int64(n)
	s.buf, s.bufOff = s.buf[:got], s.off
	if got < need {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: read %s at offset %d: %v", ErrIO, sg.sf.name, s.off+got, err)
	}
	return nil
}

// readAt fills dst with the bytes of sf from off on: from the file what
// was flushed, from the write buffer what was not. It returns how many
// bytes it got and, if fewer than len(dst), why.
func (s *logScan) readAt(sf *segFile, dst []byte, off int64) (int, error) {
	db := s.db
	n := 0
	for n < len(dst) {
		p := off + int64(n)
		if fl := sf.flushed.Load(); p < fl {
			m := int(min(int64(len(dst)-n), fl-p))
			k, err := sf.f.ReadAt(dst[n:n+m], p)
			n += k
			if k < m {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			continue
		}
		// Under tailMu the buffer's start cannot move; a flush since the
		// check above moved the bytes to the file.
		db.tailMu.RLock()
		if sf.flushed.Load() > p {
			db.tailMu.RUnlock()
			continue
		}
		rel := p - db.tail.start
		if db.active != sf || rel < 0 || rel >= db.tail.n.Load() {
			db.tailMu.RUnlock()
			return n, errors.New("bytes neither in the file nor in the write buffer")
		}
		k := copy(dst[n:], db.tail.buf[rel:db.tail.n.Load()])
		db.tailMu.RUnlock()
		n += k
	}
	return n, nil
}

// recordSpan returns the aligned size the record header at the start of b
// declares, or 0 if b does not start with a header that parses.
func recordSpan(b []byte) int {
	const fixed = 12 // crc, meta
	if len(b) < fixed+2 {
		return 0
	}
	if k := segment.Kind(b[11] & 0xf); k < segment.KindPut || k > segment.KindSyncMark {
		return 0
	}
	flags := b[11] >> 4
	p := fixed
	klen, n := binary.Uvarint(b[p:])
	if n <= 0 || klen > segment.MaxKeyLen {
		return 0
	}
	p += n
	vlen, n := binary.Uvarint(b[p:])
	if n <= 0 || vlen > 1<<32-1 {
		return 0
	}
	p += n
	if flags&segment.FlagExpiry != 0 {
		p += 8
	}
	end := uint64(p) + klen + vlen
	return int((end + segment.Align - 1) &^ (segment.Align - 1))
}

// indexedIn calls fn for every index entry of segment id whose record
// starts in one of the stretches of d (sorted, disjoint), with the
// stretch, until fn returns an error. It walks the whole index: it runs
// only for damaged segments.
func (db *DB) indexedIn(id uint16, d []damage, fn func(off int64, d *damage) error) error {
	var locs []uint64
	for sn := 0; sn < index.NumShards; sn++ {
		locs = db.ix.ShardLocations(sn, locs[:0])
		for _, l := range locs {
			lid, off := segment.SplitLoc(l)
			if lid != id {
				continue
			}
			i := sort.Search(len(d), func(i int) bool { return d[i].to > off })
			if i < len(d) && off >= d[i].from {
				if err := fn(off, &d[i]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
