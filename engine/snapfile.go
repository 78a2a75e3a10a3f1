package engine

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Index snapshot file (see docs/format.md):
//
//	frame*  footer
//
//	frame:  payloadLen uint32 | crc32c(payload) uint32 | payload
//	footer: trailerOffset uint64 | "MARLNEND"
//
// The first frame is the header ("MARLNIDX", version, shard and fingerprint
// bits, creation time, database id). Entry frames hold runs of {shard uint32, count
// uint32, count slot values uint64}, shards ascending. The last frame, at
// trailerOffset, is the trailer: the log positions the snapshot covers and
// the segment table. Every integer is little-endian.

const (
	snapMagic    = "MARLNIDX"
	snapEndMagic = "MARLNEND"
	snapVersion  = 2 // 2: the header carries the database id
	// snapHeaderSize is the header payload's size: magic, version, 4
	// layout bytes, creation time, database id.
	snapHeaderSize = 8 + 2 + 4 + 8 + 16
	snapFrameMax   = 4 << 20 // largest payload accepted when reading
	snapFrameFlush = 1 << 20 // payload size at which the writer emits a frame
	snapFooterSize = 16
	snapTmpName    = "snapshot.tmp"
)

func snapName(n uint64) string { return fmt.Sprintf("%016d.idx", n) }

func parseSnapName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".idx")
	if !ok || len(s) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// newestSnapshot returns the number of the newest snapshot file in names
// (a directory listing), or false if there is none.
func newestSnapshot(names []string) (uint64, bool) {
	var newest uint64
	found := false
	for _, name := range names {
		if n, ok := parseSnapName(name); ok && (!found || n > newest) {
			newest, found = n, true
		}
	}
	return newest, found
}

// snapFile is an open snapshot file whose footer, header and trailer have
// been read and checked (format and checksums; not whose database it is:
// that is for callers that know the id). The caller closes f.
type snapFile struct {
	name string
	f    vfs.File
	hdr  snapHeaderInfo
	meta *snapMeta
	// The entry frames lie in [entriesAt, trailerAt); the trailer frame
	// starts at trailerAt.
	entriesAt, trailerAt int64
}

// openSnapshot opens snapshot file name and reads its footer, header frame
// and trailer frame. Damage is reported as a *segment.CorruptError naming
// the file and the offset of the damaged part; an I/O error is returned as
// is.
func openSnapshot(fs vfs.FS, name string) (*snapFile, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	s, err := readSnapshotHead(f, name)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return s, nil
}

func readSnapshotHead(f vfs.File, name string) (*snapFile, error) {
	bad := func(off int64, format string, args ...any) (*snapFile, error) {
		return nil, &segment.CorruptError{File: name, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size < snapFooterSize {
		return bad(0, "too short (%d bytes)", size)
	}
	footAt := size - snapFooterSize
	var foot [snapFooterSize]byte
	if _, err := f.ReadAt(foot[:], footAt); err != nil {
		return nil, err
	}
	trailerAt := int64(binary.LittleEndian.Uint64(foot[:]))
	if string(foot[8:]) != snapEndMagic || trailerAt < 0 || trailerAt > footAt {
		return bad(footAt, "bad footer")
	}
	s := &snapFile{name: name, f: f, trailerAt: trailerAt}
	hr := &frameReader{f: f, end: trailerAt}
	p, err := hr.next()
	if err != nil {
		return bad(0, "bad header (%v)", err)
	}
	if s.hdr, err = decodeSnapHeader(p); err != nil {
		return bad(0, "%v", err)
	}
	s.entriesAt = hr.off
	tr := &frameReader{f: f, off: trailerAt, end: footAt}
	if p, err = tr.next(); err != nil {
		return bad(trailerAt, "trailer: %v", err)
	}
	if s.meta, err = decodeSnapMeta(p); err != nil {
		return bad(trailerAt, "%v", err)
	}
	return s, nil
}

// logPos is a position in the log: a segment generation and an offset.
type logPos struct {
	gen uint64
	off int64
}

func (p logPos) before(q logPos) bool { return p.gen < q.gen || p.gen == q.gen && p.off < q.off }

// snapSeg is a segment as the snapshot saw it.
type snapSeg struct {
	id     uint16
	gen    uint64
	size   int64 // bytes in the file at the accounting position
	live   int64
	ttlMin int64 // earliest expiry among the segment's records (0: none)
	// tomb and tombMaxShadow: the segment's needed tombstones (layout 2;
	// 0 from a layout-1 trailer).
	tomb          int64
	tombMaxShadow uint64
}

// snapMeta is the trailer.
type snapMeta struct {
	entries uint64
	replay  logPos // replay the log from here: the index may miss later writes
	acct    logPos // live-byte figures include every record before here
	nextSeq uint64
	nextGen uint64
	segs    []snapSeg
}

func (m *snapMeta) encode() []byte {
	b := []byte(snapEndMagic)
	b = binary.LittleEndian.AppendUint64(b, m.entries)
	for _, p := range []logPos{m.replay, m.acct} {
		b = binary.LittleEndian.AppendUint64(b, p.gen)
		b = binary.LittleEndian.AppendUint64(b, uint64(p.off))
	}
	b = binary.LittleEndian.AppendUint64(b, m.nextSeq)
	b = binary.LittleEndian.AppendUint64(b, m.nextGen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.segs)))
	for _, s := range m.segs {
		b = binary.LittleEndian.AppendUint16(b, s.id)
		b = binary.LittleEndian.AppendUint64(b, s.gen)
		b = binary.LittleEndian.AppendUint64(b, uint64(s.size))
		b = binary.LittleEndian.AppendUint64(b, uint64(s.live))
		b = binary.LittleEndian.AppendUint64(b, uint64(s.ttlMin))
		b = binary.LittleEndian.AppendUint64(b, uint64(s.tomb))
		b = binary.LittleEndian.AppendUint64(b, s.tombMaxShadow)
	}
	return b
}

// Segment table entry sizes: layout 1 (id, gen, size, live, ttlMin) and
// layout 2, which adds tomb and tombMaxShadow. The layout is told by the
// trailer's length: fixed + n*snapSegSize1 or fixed + n*snapSegSize.
const (
	snapSegSize1 = 2 + 8 + 8 + 8 + 8
	snapSegSize  = snapSegSize1 + 8 + 8
)

func decodeSnapMeta(b []byte) (*snapMeta, error) {
	const fixed = 8 + 8 + 4*8 + 8 + 8 + 4
	if len(b) < fixed || string(b[:8]) != snapEndMagic {
		return nil, fmt.Errorf("bad trailer")
	}
	m := &snapMeta{}
	u64 := func(i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }
	m.entries = u64(8)
	m.replay = logPos{u64(16), int64(u64(24))}
	m.acct = logPos{u64(32), int64(u64(40))}
	m.nextSeq, m.nextGen = u64(48), u64(56)
	n := int(binary.LittleEndian.Uint32(b[64:]))
	entSize := snapSegSize
	if n > 0 && len(b) == fixed+n*snapSegSize1 {
		entSize = snapSegSize1
	}
	if n > segment.MaxSegments || len(b) != fixed+n*entSize {
		return nil, fmt.Errorf("bad segment table (%d segments in %d bytes)", n, len(b))
	}
	for i, p := 0, fixed; i < n; i, p = i+1, p+entSize {
		s := snapSeg{id: binary.LittleEndian.Uint16(b[p:]), gen: u64(p + 2),
			size: int64(u64(p + 10)), live: int64(u64(p + 18)), ttlMin: int64(u64(p + 26))}
		if entSize == snapSegSize {
			s.tomb, s.tombMaxShadow = int64(u64(p+34)), u64(p+42)
		}
		if s.id >= segment.MaxSegments || s.size < segment.HeaderSize || s.size > segment.MaxSegmentSize || s.live < 0 ||
			s.tomb < 0 || s.live+s.tomb > s.size-segment.HeaderSize {
			return nil, fmt.Errorf("bad segment table entry %d", i)
		}
		m.segs = append(m.segs, s)
	}
	return m, nil
}

func snapHeader(createdMs int64, id DBID) []byte {
	b := []byte(snapMagic)
	b = binary.LittleEndian.AppendUint16(b, snapVersion)
	b = append(b, index.ShardBits, index.FPBits, 0, 0) // index layout: a snapshot of another layout is ignored
	b = binary.LittleEndian.AppendUint64(b, uint64(createdMs))
	b = append(b, id[:]...)
	return b
}

// snapHeaderInfo is a decoded snapshot header.
type snapHeaderInfo struct {
	createdMs int64
	id        DBID
}

// decodeSnapHeader checks a snapshot header payload: magic, version, the
// index layout this code uses.
func decodeSnapHeader(p []byte) (snapHeaderInfo, error) {
	var h snapHeaderInfo
	if len(p) < 10 || string(p[:8]) != snapMagic {
		return h, fmt.Errorf("bad header")
	}
	if v := binary.LittleEndian.Uint16(p[8:]); v != snapVersion {
		return h, fmt.Errorf("unsupported snapshot version %d (this Marlin writes %d)", v, snapVersion)
	}
	if len(p) != snapHeaderSize || p[10] != index.ShardBits || p[11] != index.FPBits {
		return h, fmt.Errorf("bad header")
	}
	h.createdMs = int64(binary.LittleEndian.Uint64(p[14:]))
	copy(h.id[:], p[22:38])
	return h, nil
}

// frameWriter writes checksummed frames to a file.
type frameWriter struct {
	f       vfs.File
	payload []byte
	off     int64 // bytes written
	err     error
}

// frame writes p as one frame.
func (w *frameWriter) frame(p []byte) {
	if w.err != nil {
		return
	}
	var h [8]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(p)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(p, castagnoli))
	if _, w.err = w.f.Write(h[:]); w.err == nil {
		_, w.err = w.f.Write(p)
	}
	w.off += int64(len(h) + len(p))
}

// shard adds one shard's slots to the pending entry frame.
func (w *frameWriter) shard(sn int, slots []uint64) {
	w.payload = binary.LittleEndian.AppendUint32(w.payload, uint32(sn))
	w.payload = binary.LittleEndian.AppendUint32(w.payload, uint32(len(slots)))
	for _, s := range slots {
		w.payload = binary.LittleEndian.AppendUint64(w.payload, s)
	}
	if len(w.payload) >= snapFrameFlush {
		w.flushEntries()
	}
}

func (w *frameWriter) flushEntries() {
	if len(w.payload) > 0 {
		w.frame(w.payload)
		w.payload = w.payload[:0]
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frameReader reads frames sequentially from a file of known size.
type frameReader struct {
	f    vfs.File
	off  int64
	end  int64 // where frames end (the footer starts)
	buf  []byte
	head [8]byte
}

// next returns the next frame's payload (valid until the next call), or
// io.EOF at the end of the frames.
func (r *frameReader) next() ([]byte, error) {
	if r.off >= r.end {
		return nil, io.EOF
	}
	if _, err := r.f.ReadAt(r.head[:], r.off); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint32(r.head[:]))
	if n > snapFrameMax || r.off+8+n > r.end {
		return nil, fmt.Errorf("frame at %d: bad length %d", r.off, n)
	}
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := r.f.ReadAt(p, r.off+8); err != nil {
		return nil, err
	}
	if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(r.head[4:]) {
		return nil, fmt.Errorf("frame at %d: checksum mismatch", r.off)
	}
	r.off += 8 + n
	return p, nil
}
