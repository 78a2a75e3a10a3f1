package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Recovery tests: torn tails of the newest segment are truncated (durably,
// before anything is appended), damage anywhere else is ErrCorrupt naming
// the file and offset, and no damage ever turns into a wrong value. Damage
// in the newest segment below a sync mark's claim (Close appends one) is
// not a torn tail but corruption too; tests about torn tails strip the
// Close mark first (rcStripCloseMark: a crash just before Close finished).

const rcDir = "/db"

var rcLim = segment.Limits{MaxKey: segment.MaxKeyLen, MaxValue: 1 << 30}

// rcOpts configures the replay tests. Snapshots are off: with one, Open
// trusts the log before the snapshot's durable position and does not scan
// it (damage there is found by reads and by verification instead); these
// tests are about what a scan of the log finds.
func rcOpts(fs vfs.FS, segSize int64) *Options {
	return &Options{FS: fs, SegmentSize: segSize, WriteBufferSize: 4096, Sync: SyncNone,
		Logger: discardLogger, IndexReserve: 1 << 26, DisableSnapshots: true}
}

func rcKey(i int) []byte { return fmt.Appendf(nil, "key-%04d", i) }
func rcVal(i int) []byte {
	return fmt.Appendf(nil, "value-%04d-%s", i, strings.Repeat("x", 20+i%17))
}

// rcPut writes keys [from, to).
func rcPut(t *testing.T, db *DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		require.NoError(t, db.Put(rcKey(i), rcVal(i)))
	}
}

// rcCheck asserts that keys [0, n) read back, except those in lost, which
// must be absent.
func rcCheck(t *testing.T, db *DB, n int, lost map[int]bool) {
	t.Helper()
	for i := range n {
		v, err := db.Get(rcKey(i))
		if lost[i] {
			require.ErrorIs(t, err, ErrNotFound, "key %d should be gone", i)
			continue
		}
		require.NoError(t, err, "key %d", i)
		require.Equal(t, string(rcVal(i)), string(v), "key %d", i)
	}
}

// rcSegFiles returns the paths of the segment files in rcDir, oldest first.
func rcSegFiles(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	var paths []string
	for _, n := range names {
		if _, ok := segment.ParseFileName(n); ok {
			paths = append(paths, filepath.Join(dir, n))
		}
	}
	return paths
}

func rcGen(t *testing.T, path string) uint64 {
	t.Helper()
	g, ok := segment.ParseFileName(filepath.Base(path))
	require.True(t, ok, path)
	return g
}

func rcRead(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	require.NoError(t, err)
	defer f.Close()
	size, err := f.Size()
	require.NoError(t, err)
	b := make([]byte, size)
	if size > 0 {
		_, err = f.ReadAt(b, 0)
		require.NoError(t, err)
	}
	return b
}

// rcWrite replaces path's contents with data (durably). On MemFS the file
// keeps its backing array, so open mappings see the new bytes.
func rcWrite(t *testing.T, fs vfs.FS, path string, data []byte) {
	t.Helper()
	f, err := fs.Create(path)
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func rcTruncate(t *testing.T, fs vfs.FS, path string, size int64) {
	t.Helper()
	f, err := fs.OpenReadWrite(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func rcSize(t *testing.T, fs vfs.FS, path string) int64 {
	t.Helper()
	fi, err := fs.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}

// rcRec describes one record of a segment file.
type rcRec struct {
	off    int64
	size   int
	kind   segment.Kind
	key    string
	valOff int64 // file offset of the value
	value  []byte
}

// rcLayout decodes every record of an intact segment image.
func rcLayout(t *testing.T, data []byte, gen uint64) []rcRec {
	t.Helper()
	h, err := segment.DecodeHeader(data)
	require.NoError(t, err)
	require.Equal(t, gen, h.Generation)
	var recs []rcRec
	for off := int64(segment.HeaderSize); off < int64(len(data)); {
		r, n, err := segment.Decode(data[off:], gen, off, rcLim)
		require.NoError(t, err, "record at %d", off)
		var tmp [binary.MaxVarintLen64]byte
		hdr := 12 + binary.PutUvarint(tmp[:], uint64(len(r.Key))) + binary.PutUvarint(tmp[:], uint64(len(r.Value)))
		if r.Expiry != 0 {
			hdr += 8
		}
		recs = append(recs, rcRec{off: off, size: n, kind: r.Kind, key: string(r.Key),
			valOff: off + int64(hdr+len(r.Key)), value: bytes.Clone(r.Value)})
		off += int64(n)
	}
	return recs
}

// rcScanEnd asserts that the segment file at path is intact and ends at a
// record boundary.
func rcScanEnd(t *testing.T, fs vfs.FS, path string) {
	t.Helper()
	data := rcRead(t, fs, path)
	end, err := segment.Scan(data, rcGen(t, path), rcLim, func([]segment.Entry) error { return nil })
	require.NoError(t, err, "%s must be intact", path)
	require.Equal(t, int64(len(data)), end, "%s must end at a record boundary", path)
}

// rcRecordAt returns the record of recs that holds byte off.
func rcRecordAt(recs []rcRec, off int64) rcRec {
	for _, r := range recs {
		if off >= r.off && off < r.off+int64(r.size) {
			return r
		}
	}
	panic(fmt.Sprintf("no record holds offset %d", off))
}

// rcRequireCorrupt asserts err is ErrCorrupt at file path, offset off.
func rcRequireCorrupt(t *testing.T, err error, path string, off int64, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.ErrorIs(t, err, ErrCorrupt, msgAndArgs...)
	var ce *segment.CorruptError
	require.ErrorAs(t, err, &ce, msgAndArgs...)
	require.Equal(t, path, ce.File, msgAndArgs...)
	require.Equal(t, off, ce.Offset, msgAndArgs...)
	require.Contains(t, err.Error(), path, msgAndArgs...)
	require.Contains(t, err.Error(), fmt.Sprintf("at offset %d:", off), msgAndArgs...)
}

func TestTornTailNewestSegment(t *testing.T) {
	const n = 20
	type want struct {
		lost      map[int]bool // keys (index) gone after recovery; batch keys are n, n+1, n+2
		truncated int64        // Stats().TruncatedBytes
		size      int64        // file size after recovery
	}
	last := func(recs []rcRec) rcRec { return recs[len(recs)-1] }
	cases := []struct {
		name   string
		batch  bool
		damage func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want
	}{
		{"cut in header", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			l := last(recs)
			rcTruncate(t, fs, path, l.off+6)
			return want{map[int]bool{n - 1: true}, 6, l.off}
		}},
		{"cut in lengths", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			l := last(recs)
			rcTruncate(t, fs, path, l.off+14)
			return want{map[int]bool{n - 1: true}, 14, l.off}
		}},
		{"cut in value", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			l := last(recs)
			cut := l.valOff + int64(len(l.value)/2)
			rcTruncate(t, fs, path, cut)
			return want{map[int]bool{n - 1: true}, cut - l.off, l.off}
		}},
		{"bit flip in crc", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			l := last(recs)
			d := bytes.Clone(data)
			d[l.off+2] ^= 0x08
			rcWrite(t, fs, path, d)
			return want{map[int]bool{n - 1: true}, int64(l.size), l.off}
		}},
		{"bit flip in value", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			l := last(recs)
			d := bytes.Clone(data)
			d[l.valOff+3] ^= 0x01
			rcWrite(t, fs, path, d)
			return want{map[int]bool{n - 1: true}, int64(l.size), l.off}
		}},
		{"100 zero bytes appended", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			rcWrite(t, fs, path, append(bytes.Clone(data), make([]byte, 100)...))
			return want{nil, 100, int64(len(data))}
		}},
		{"padding cut off", false, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			// Only the zero padding of the last record is missing: the
			// record is intact and kept; the file is restored to the
			// aligned size.
			l := last(recs)
			unpadded := l.valOff + int64(len(l.value))
			require.Less(t, unpadded, l.off+int64(l.size), "the last record must have padding")
			rcTruncate(t, fs, path, unpadded)
			return want{nil, 0, int64(len(data))}
		}},
		{"partial batch: commit cut off", true, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			c := last(recs)
			require.Equal(t, segment.KindBatchCommit, c.kind)
			start := recs[n].off
			rcTruncate(t, fs, path, c.off)
			return want{map[int]bool{n: true, n + 1: true, n + 2: true}, c.off - start, start}
		}},
		{"partial batch: commit torn", true, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			c := last(recs)
			start := recs[n].off
			rcTruncate(t, fs, path, c.off+9)
			return want{map[int]bool{n: true, n + 1: true, n + 2: true}, c.off + 9 - start, start}
		}},
		{"partial batch: last batch record torn", true, func(t *testing.T, fs vfs.FS, path string, data []byte, recs []rcRec) want {
			b3 := recs[n+2]
			start := recs[n].off
			rcTruncate(t, fs, path, b3.valOff+1)
			return want{map[int]bool{n: true, n + 1: true, n + 2: true}, b3.valOff + 1 - start, start}
		}},
	}
	for _, fsName := range []string{"mem", "os"} {
		for _, tc := range cases {
			t.Run(fsName+"/"+tc.name, func(t *testing.T) {
				var fs vfs.FS = vfs.NewMem()
				dir := rcDir
				if fsName == "os" {
					fs, dir = vfs.Default, t.TempDir()
				}
				db, err := Open(dir, rcOpts(fs, 64<<10))
				require.NoError(t, err)
				rcPut(t, db, 0, n)
				total := n
				if tc.batch {
					var b Batch
					for i := n; i < n+3; i++ {
						b.Put(rcKey(i), rcVal(i))
					}
					require.NoError(t, db.Write(&b))
					total += 3
				}
				require.NoError(t, db.Close())
				rcStripCloseMark(t, fs, dir)

				files := rcSegFiles(t, fs, dir)
				require.Len(t, files, 1)
				path := files[0]
				data := rcRead(t, fs, path)
				recs := rcLayout(t, data, rcGen(t, path))
				wantRecs := n
				if tc.batch {
					wantRecs += 4
				}
				require.Len(t, recs, wantRecs, "SyncNone writes no sync marks")

				w := tc.damage(t, fs, path, data, recs)

				db, err = Open(dir, rcOpts(fs, 64<<10))
				require.NoError(t, err)
				st, err := db.Stats()
				require.NoError(t, err)
				require.Equal(t, w.truncated, st.TruncatedBytes)
				require.Equal(t, w.size, rcSize(t, fs, path), "the torn tail must be cut off")
				require.Equal(t, data[:w.size], rcRead(t, fs, path), "the records before the damage are kept as they were")
				rcScanEnd(t, fs, path)
				if mfs, ok := fs.(*vfs.MemFS); ok {
					// The truncation was fsynced at Open, before any append.
					require.Equal(t, data[:w.size], rcRead(t, mfs.CrashClone(nil), path))
				}
				rcCheck(t, db, total, w.lost)

				// New writes go to the truncated segment and survive reopens
				// (LevelDB #1287: appending after an untruncated torn tail
				// would make the next Open fail).
				rcPut(t, db, 100, 110)
				var b Batch
				for i := 110; i < 113; i++ {
					b.Put(rcKey(i), rcVal(i))
				}
				require.NoError(t, db.Write(&b))
				require.NoError(t, db.Sync())
				rcPut(t, db, 113, 115) // not synced, flushed at Close
				require.Equal(t, []string{path}, rcSegFiles(t, fs, dir), "appends must go to the recovered segment")
				var crashed *vfs.MemFS
				if mfs, ok := fs.(*vfs.MemFS); ok {
					crashed = mfs.CrashClone(nil)
				}
				require.NoError(t, db.Close())
				require.Greater(t, rcSize(t, fs, path), w.size)
				rcScanEnd(t, fs, path)

				check := func(fs vfs.FS, upTo int) {
					db, err := Open(dir, rcOpts(fs, 64<<10))
					require.NoError(t, err, "reopen after appending to a recovered segment")
					st, err := db.Stats()
					require.NoError(t, err)
					require.Zero(t, st.TruncatedBytes)
					rcCheck(t, db, total, w.lost)
					for i := 100; i < 115; i++ {
						v, err := db.Get(rcKey(i))
						if i >= upTo {
							require.ErrorIs(t, err, ErrNotFound, "key %d was never synced", i)
							continue
						}
						require.NoError(t, err, "key %d", i)
						require.Equal(t, rcVal(i), v)
					}
					require.NoError(t, db.Close())
				}
				check(fs, 115)
				check(fs, 115) // and again
				if crashed != nil {
					check(crashed, 113) // power loss after the Sync
				}
			})
		}
	}
}

// rcMultiSegment writes n keys with 4 KiB segments and closes the DB.
// rcTag returns the segment-header tag of the database in dir.
func rcTag(t *testing.T, fs vfs.FS, dir string) uint32 {
	t.Helper()
	m, err := readMeta(fs, dir)
	require.NoError(t, err)
	return m.id.Tag()
}

func rcMultiSegment(t *testing.T, n int) (*vfs.MemFS, []string) {
	t.Helper()
	fs := vfs.NewMem()
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	rcPut(t, db, 0, n)
	require.NoError(t, db.Close())
	return fs, rcSegFiles(t, fs, rcDir)
}

func TestCorruptSealedSegment(t *testing.T) {
	const n = 200
	fs, files := rcMultiSegment(t, n)
	require.GreaterOrEqual(t, len(files), 4)
	path := files[1] // sealed: neither the oldest nor the newest
	orig := rcRead(t, fs, path)
	recs := rcLayout(t, orig, rcGen(t, path))
	require.Greater(t, len(recs), 10)
	mid := recs[len(recs)/2]
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		for _, f := range rcSegFiles(t, fs, rcDir) {
			m[f] = rcRead(t, fs, f)
		}
		return m
	}

	cases := []struct {
		name   string
		damage func() []byte
		off    int64
	}{
		{"bit flip in value", func() []byte { d := bytes.Clone(orig); d[mid.valOff+2] ^= 0x40; return d }, mid.off},
		{"bit flip in crc", func() []byte { d := bytes.Clone(orig); d[mid.off] ^= 0x01; return d }, mid.off},
		{"bit flip in first record", func() []byte { d := bytes.Clone(orig); d[recs[0].off+8] ^= 0x01; return d }, recs[0].off},
		{"bit flip in last record", func() []byte {
			l := recs[len(recs)-1]
			d := bytes.Clone(orig)
			d[l.valOff] ^= 0x01
			return d
		}, recs[len(recs)-1].off},
		{"zeroed record", func() []byte {
			d := bytes.Clone(orig)
			clear(d[mid.off : mid.off+int64(mid.size)])
			return d
		}, mid.off},
		{"cut in a record", func() []byte { return bytes.Clone(orig[:mid.off+10]) }, mid.off},
		{"zeros appended", func() []byte { return append(bytes.Clone(orig), make([]byte, 64)...) }, int64(len(orig))},
		{"bad magic", func() []byte { d := bytes.Clone(orig); d[0] = 'X'; return d }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcWrite(t, fs, path, tc.damage())
			before := snapshot()
			for range 2 { // a failed Open changes nothing and releases the lock
				db, err := Open(rcDir, rcOpts(fs, 4096))
				if err == nil {
					_ = db.Close()
				}
				rcRequireCorrupt(t, err, path, tc.off)
				require.Equal(t, before, snapshot(), "a failed Open must not modify any segment")
			}
			rcWrite(t, fs, path, orig)
			db, err := Open(rcDir, rcOpts(fs, 4096))
			require.NoError(t, err)
			rcCheck(t, db, n, nil)
			require.NoError(t, db.Close())
		})
	}
}

func TestCorruptSyncedNewestSegment(t *testing.T) {
	// With explicit Syncs between writes the engine writes sync marks; a
	// damaged record followed by a mark claiming it was fsynced is
	// corruption, not a torn tail. Close appends one more mark claiming
	// everything before it, so in the closed image all damage is
	// corruption; the Sync's own mark is tested on the image without the
	// Close mark (a crash just before Close finished).
	fs := vfs.NewMem()
	db, err := Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err)
	rcPut(t, db, 0, 10)
	require.NoError(t, db.Sync())
	rcPut(t, db, 10, 20)
	require.NoError(t, db.Close())

	files := rcSegFiles(t, fs, rcDir)
	require.Len(t, files, 1)
	path := files[0]
	orig := rcRead(t, fs, path)
	recs := rcLayout(t, orig, rcGen(t, path))
	require.Len(t, recs, 22, "20 puts, the Sync's mark and the Close mark")
	mk := recs[10]
	require.Equal(t, segment.KindSyncMark, mk.kind, "a sync mark must follow the synced records")
	claim, k := binary.Uvarint(mk.value)
	require.Positive(t, k)
	require.Equal(t, uint64(mk.off), claim, "the mark claims everything before it")
	cm := recs[21]
	require.Equal(t, segment.KindSyncMark, cm.kind, "Close must append a sync mark after the data")
	claim, k = binary.Uvarint(cm.value)
	require.Positive(t, k)
	require.Equal(t, uint64(cm.off), claim, "the Close mark claims everything before it")
	require.Equal(t, int64(len(orig)), cm.off+int64(cm.size), "the Close mark is the last record")

	// flip damages record r of img (a mark in its checksum, a put in its
	// value).
	flip := func(img []byte, r rcRec) []byte {
		d := bytes.Clone(img)
		if r.kind == segment.KindSyncMark {
			d[r.off+4] ^= 0x01
		} else {
			d[r.valOff+1] ^= 0x20
		}
		return d
	}
	requireCorrupt := func(d []byte, r rcRec, claim int64, msg string) {
		t.Helper()
		rcWrite(t, fs, path, d)
		_, err := Open(rcDir, rcOpts(fs, 64<<10))
		rcRequireCorrupt(t, err, path, r.off, msg)
		require.Contains(t, err.Error(), fmt.Sprintf("a sync mark shows the data up to offset %d had been fsynced", claim), msg)
		require.Equal(t, d, rcRead(t, fs, path), "synced data must not be truncated away (%s)", msg)
	}

	// Closed image: the Close mark covers every record before it, the
	// records after the Sync's mark and that mark itself included.
	for _, victim := range []int{0, 5, 9, 10, 11, 15, 20} {
		requireCorrupt(flip(orig, recs[victim]), recs[victim], cm.off,
			fmt.Sprintf("closed: damage in record %d below the Close mark's claim", victim))
	}

	// A crash just before Close finished: no Close mark.
	rcWrite(t, fs, path, orig)
	rcStripCloseMark(t, fs, rcDir)
	stripped := rcRead(t, fs, path)
	require.Equal(t, orig[:cm.off], stripped)
	recs = recs[:21]

	// Damage before the Sync's mark is corruption: that mark alone proves it.
	for _, victim := range []int{0, 5, 9} {
		requireCorrupt(flip(stripped, recs[victim]), recs[victim], mk.off,
			fmt.Sprintf("damage in record %d below the Sync mark's claim", victim))
	}

	// Damage after the mark is a torn tail: truncated there.
	for _, victim := range []int{11, 15, 20} {
		rcWrite(t, fs, path, flip(stripped, recs[victim]))
		db, err := Open(rcDir, rcOpts(fs, 64<<10))
		require.NoError(t, err, "damage in record %d after the last mark", victim)
		st, err := db.Stats()
		require.NoError(t, err)
		require.Equal(t, int64(len(stripped))-recs[victim].off, st.TruncatedBytes)
		lost := map[int]bool{}
		for i := victim - 1; i < 20; i++ { // record i+1 holds key i
			lost[i] = true
		}
		rcCheck(t, db, 20, lost)
		require.NoError(t, db.Close())
		require.Equal(t, stripped[:recs[victim].off], rcRead(t, fs, path),
			"truncated at the damage; a Close without writes adds no mark")
	}

	// A damaged mark itself is a torn tail too (it proves nothing).
	rcWrite(t, fs, path, flip(stripped, mk))
	db, err = Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(len(stripped))-mk.off, st.TruncatedBytes)
	lost := map[int]bool{}
	for i := 10; i < 20; i++ {
		lost[i] = true
	}
	rcCheck(t, db, 20, lost)
	require.NoError(t, db.Close())
	require.Equal(t, stripped[:mk.off], rcRead(t, fs, path))
}

func TestCorruptSyncGroupMarks(t *testing.T) {
	// SyncGroup: every Put waits for an fsync, so the next Put's record is
	// preceded by a mark claiming the previous one is durable. Close marks
	// the last one.
	fs := vfs.NewMem()
	o := rcOpts(fs, 64<<10)
	o.Sync = SyncGroup
	db, err := Open(rcDir, o)
	require.NoError(t, err)
	rcPut(t, db, 0, 12)
	require.NoError(t, db.Close())
	path := rcSegFiles(t, fs, rcDir)[0]
	orig := rcRead(t, fs, path)
	recs := rcLayout(t, orig, rcGen(t, path))
	cm := recs[len(recs)-1]
	require.Equal(t, segment.KindSyncMark, cm.kind, "Close must append a sync mark after the data")
	claim, k := binary.Uvarint(cm.value)
	require.Positive(t, k)
	require.Equal(t, uint64(cm.off), claim, "the Close mark claims everything before it")
	var data []rcRec
	marks := 0
	for _, r := range recs[:len(recs)-1] {
		if r.kind == segment.KindSyncMark {
			marks++
		} else {
			data = append(data, r)
		}
	}
	require.Len(t, data, 12)
	require.GreaterOrEqual(t, marks, 10, "SyncGroup puts should leave sync marks")
	damage := func(img []byte, r rcRec) []byte {
		d := bytes.Clone(img)
		d[r.valOff] ^= 0x02
		return d
	}

	// Closed: the Close mark claims the last record too.
	for _, victim := range []rcRec{data[10], data[11]} {
		d := damage(orig, victim)
		rcWrite(t, fs, path, d)
		_, err = Open(rcDir, o)
		rcRequireCorrupt(t, err, path, victim.off, "closed: record at %d", victim.off)
		require.Equal(t, d, rcRead(t, fs, path), "synced data must not be truncated away")
	}

	// A crash just before Close finished: no Close mark.
	rcWrite(t, fs, path, orig)
	rcStripCloseMark(t, fs, rcDir)
	stripped := rcRead(t, fs, path)
	require.Equal(t, orig[:cm.off], stripped)

	// The second-to-last record is followed by a mark claiming it.
	victim := data[10]
	d := damage(stripped, victim)
	rcWrite(t, fs, path, d)
	_, err = Open(rcDir, o)
	rcRequireCorrupt(t, err, path, victim.off)
	require.Equal(t, d, rcRead(t, fs, path), "synced data must not be truncated away")

	// The last record has no mark after it: a torn tail.
	victim = data[11]
	rcWrite(t, fs, path, damage(stripped, victim))
	db, err = Open(rcDir, o)
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(len(stripped))-victim.off, st.TruncatedBytes)
	require.Equal(t, stripped[:victim.off], rcRead(t, fs, path))
	rcCheck(t, db, 12, map[int]bool{11: true})
	require.NoError(t, db.Put([]byte("after"), []byte("x")))
	require.NoError(t, db.Close())
	db, err = Open(rcDir, o)
	require.NoError(t, err)
	st, err = db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.TruncatedBytes)
	rcCheck(t, db, 12, map[int]bool{11: true})
	v, err := db.Get([]byte("after"))
	require.NoError(t, err)
	require.Equal(t, "x", string(v))
	require.NoError(t, db.Close())
}

func TestRecoverTornSegmentCreation(t *testing.T) {
	const n = 100
	header := func(gen uint64) []byte { return segment.EncodeHeader(segment.Header{ID: 7, Generation: gen, DBTag: 1}) }
	cases := []struct {
		name string
		data func(gen uint64) []byte
	}{
		{"empty", func(uint64) []byte { return nil }},
		{"partial header", func(gen uint64) []byte { return header(gen)[:10] }},
		{"header minus one byte", func(gen uint64) []byte { return header(gen)[:segment.HeaderSize-1] }},
		{"32 zero bytes", func(uint64) []byte { return make([]byte, segment.HeaderSize) }},
		{"4 KiB of zeros", func(uint64) []byte { return make([]byte, 4096) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, files := rcMultiSegment(t, n)
			require.GreaterOrEqual(t, len(files), 2)
			torn := filepath.Join(rcDir, segment.FileName(rcGen(t, files[len(files)-1])+1))
			rcWrite(t, fs, torn, tc.data(0))

			db, err := Open(rcDir, rcOpts(fs, 4096))
			require.NoError(t, err)
			_, err = fs.Stat(torn)
			require.Error(t, err, "the torn segment must be removed")
			require.NotContains(t, rcSegFiles(t, fs, rcDir), torn)
			rcCheck(t, db, n, nil)
			rcPut(t, db, n, n+50)
			require.NoError(t, db.Close())

			db, err = Open(rcDir, rcOpts(fs, 4096))
			require.NoError(t, err)
			rcCheck(t, db, n+50, nil)
			require.NoError(t, db.Close())
		})
	}

	t.Run("only segment", func(t *testing.T) {
		// A crash while the first segment was created: the identity file
		// is in place (it is written, and made durable, first).
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll(rcDir, 0o755))
		m, err := newMeta(time.Now(), 4096)
		require.NoError(t, err)
		require.NoError(t, writeMeta(fs, rcDir, m))
		torn := filepath.Join(rcDir, segment.FileName(1))
		rcWrite(t, fs, torn, make([]byte, 20))
		db, err := Open(rcDir, rcOpts(fs, 4096))
		require.NoError(t, err)
		rcPut(t, db, 0, 5)
		require.NoError(t, db.Close())
		db, err = Open(rcDir, rcOpts(fs, 4096))
		require.NoError(t, err)
		rcCheck(t, db, 5, nil)
		require.NoError(t, db.Close())
	})

	t.Run("zero file that is not the newest is corruption", func(t *testing.T) {
		fs, files := rcMultiSegment(t, n)
		older := filepath.Join(rcDir, segment.FileName(0))
		require.Less(t, older, files[0])
		rcWrite(t, fs, older, make([]byte, segment.HeaderSize))
		_, err := Open(rcDir, rcOpts(fs, 4096))
		rcRequireCorrupt(t, err, older, 0)
		_, err = fs.Stat(older)
		require.NoError(t, err, "only the newest segment may be removed")
	})
}

func TestTornTailWithSealedSegments(t *testing.T) {
	const n = 200
	fs, files := rcMultiSegment(t, n)
	require.GreaterOrEqual(t, len(files), 4)
	newest := files[len(files)-1]
	// A crash just before Close finished: the last record was never
	// fsynced, so cutting it is a torn write. (With the Close mark it
	// would be corruption: TestCloseMarkMakesClosedDataCorruptNotTorn.)
	closed := rcRead(t, fs, newest)
	rcStripCloseMark(t, fs, rcDir)
	data := rcRead(t, fs, newest)
	require.Less(t, len(data), len(closed), "Close must have appended a sync mark")
	recs := rcLayout(t, data, rcGen(t, newest))
	l := recs[len(recs)-1]
	require.Equal(t, string(rcKey(n-1)), l.key)
	rcTruncate(t, fs, newest, l.valOff)

	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, l.valOff-l.off, st.TruncatedBytes)
	require.Equal(t, l.off, rcSize(t, fs, newest))
	rcCheck(t, db, n, map[int]bool{n - 1: true})
	rcPut(t, db, n, n+150) // rolls over into new segments
	require.NoError(t, db.Close())
	require.Greater(t, len(rcSegFiles(t, fs, rcDir)), len(files))
	rcScanEnd(t, fs, newest)

	db, err = Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	st, err = db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.TruncatedBytes)
	rcCheck(t, db, n+150, map[int]bool{n - 1: true})
	require.NoError(t, db.Close())
}

// TestRecoverWithSmallerLimits reopens a DB with a smaller MaxValueSize or
// MaxKeySize than its records were written with. The records are intact
// and were fsynced by Close, so Open may refuse the options, but it must not
// treat them as a torn tail and truncate them away.
func TestRecoverWithSmallerLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		key   []byte
		value []byte
		lower func(*Options)
	}{
		{"MaxValueSize", []byte("big"), bytes.Repeat([]byte("v"), 1000), func(o *Options) { o.MaxValueSize = 100 }},
		{"MaxKeySize", bytes.Repeat([]byte("k"), 200), []byte("v"), func(o *Options) { o.MaxKeySize = 100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			db, err := Open(rcDir, rcOpts(fs, 64<<10))
			require.NoError(t, err)
			rcPut(t, db, 0, 5)
			require.NoError(t, db.Put(tc.key, tc.value))
			rcPut(t, db, 5, 10)
			require.NoError(t, db.Close())
			path := rcSegFiles(t, fs, rcDir)[0]
			before := rcRead(t, fs, path)

			o := rcOpts(fs, 64<<10)
			tc.lower(o)
			db, err = Open(rcDir, o)
			if err == nil {
				st, err := db.Stats()
				require.NoError(t, err)
				require.Zero(t, st.TruncatedBytes, "fsynced records dropped as a torn tail")
				require.NoError(t, db.Close())
			}
			require.Equal(t, before, rcRead(t, fs, path), "Open with smaller limits modified the segment")

			db, err = Open(rcDir, rcOpts(fs, 64<<10))
			require.NoError(t, err)
			defer db.Close()
			v, err := db.Get(tc.key)
			require.NoError(t, err)
			require.Equal(t, tc.value, v)
			rcCheck(t, db, 10, nil)
		})
	}
}

// TestCorruptSweep flips one byte at every 8th offset of a sealed segment's
// records and checks that Open reports it at the right record; in the
// newest segment, damage below the Close mark is reported the same way and
// damage past it (or with it stripped) is a torn tail cut off at the
// damaged record. Damage can never turn into a wrong value.
func TestCorruptSweep(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	n := 0
	for {
		require.NoError(t, db.Put(rcKey(n), rcVal(n)))
		n++
		st, err := db.Stats()
		require.NoError(t, err)
		if st.Rolls == 1 {
			break
		}
	}
	rcPut(t, db, n, n+8)
	n += 8
	require.NoError(t, db.Close())
	files := rcSegFiles(t, fs, rcDir)
	require.Len(t, files, 2)

	// getAll asserts that every key reads back right or reports corruption.
	getAll := func(db *DB) (corrupt, missing int) {
		for i := range n {
			v, err := db.Get(rcKey(i))
			switch {
			case err == nil:
				require.Equal(t, string(rcVal(i)), string(v), "key %d: wrong value", i)
			case errors.Is(err, ErrCorrupt):
				corrupt++
			case errors.Is(err, ErrNotFound):
				missing++
			default:
				require.NoError(t, err, "key %d", i)
			}
		}
		return corrupt, missing
	}

	t.Run("sealed", func(t *testing.T) {
		path := files[0]
		orig := rcRead(t, fs, path)
		recs := rcLayout(t, orig, rcGen(t, path))
		for off := int64(segment.HeaderSize); off < int64(len(orig)); off += 8 {
			d := bytes.Clone(orig)
			d[off] ^= 0xff
			rcWrite(t, fs, path, d)
			db, err := Open(rcDir, rcOpts(fs, 4096))
			if err != nil {
				rcRequireCorrupt(t, err, path, rcRecordAt(recs, off).off, "byte %d flipped", off)
				continue
			}
			corrupt, missing := getAll(db)
			require.NoError(t, db.Close())
			t.Errorf("byte %d of sealed %s flipped, Open succeeded (%d corrupt, %d missing gets)", off, path, corrupt, missing)
		}
		rcWrite(t, fs, path, orig)
	})

	t.Run("newest", func(t *testing.T) {
		path := files[1]
		orig := rcRead(t, fs, path)
		recs := rcLayout(t, orig, rcGen(t, path))
		require.Greater(t, len(recs), 5)
		// SyncNone without Syncs: the only mark is the one Close appended
		// after the data, claiming all of it.
		cm := recs[len(recs)-1]
		require.Equal(t, segment.KindSyncMark, cm.kind, "Close must append a sync mark after the data")
		claim, k := binary.Uvarint(cm.value)
		require.Positive(t, k)
		require.Equal(t, uint64(cm.off), claim)
		puts := recs[:len(recs)-1]
		for _, r := range puts {
			require.Equal(t, segment.KindPut, r.kind, "record at %d", r.off)
		}
		first := n - len(puts) // keys [first, n) are in the newest segment

		// sweep flips every 8th byte of img, whose records are recs; damage
		// to a record below synced (the Close mark's claim) is corruption,
		// anything else a torn tail cut off at the damaged record.
		sweep := func(img []byte, recs []rcRec, synced int64) {
			for off := int64(segment.HeaderSize); off < int64(len(img)); off += 8 {
				d := bytes.Clone(img)
				d[off] ^= 0xff
				rcWrite(t, fs, path, d)
				db, err := Open(rcDir, rcOpts(fs, 4096))
				r := rcRecordAt(recs, off)
				if r.off < synced {
					rcRequireCorrupt(t, err, path, r.off, "byte %d flipped before the Close mark", off)
					require.Equal(t, d, rcRead(t, fs, path), "byte %d: synced data must not be truncated away", off)
					continue
				}
				require.NoError(t, err, "unsynced damage in the newest segment is a torn tail (byte %d)", off)
				defer db.Close() // on failure; a second Close returns nil
				st, err := db.Stats()
				require.NoError(t, err)
				require.Equal(t, int64(len(img))-r.off, st.TruncatedBytes, "byte %d", off)
				require.Equal(t, img[:r.off], rcRead(t, fs, path), "byte %d", off)
				kept := 0 // keys before the damaged record
				for _, p := range recs {
					if p.off < r.off && p.kind == segment.KindPut {
						kept++
					}
				}
				corrupt, missing := getAll(db)
				require.Zero(t, corrupt)
				require.Equal(t, len(puts)-kept, missing, "byte %d: keys from the damaged record on are gone", off)
				for i := first; i < first+kept; i++ {
					_, err := db.Get(rcKey(i))
					require.NoError(t, err, "byte %d: key %d precedes the damage", off, i)
				}
				require.NoError(t, db.Close())
			}
		}
		// Closed: only damage to the Close mark itself is a torn tail.
		sweep(orig, recs, cm.off)
		// A crash just before Close finished: every record is unsynced.
		rcWrite(t, fs, path, orig)
		rcStripCloseMark(t, fs, rcDir)
		require.Equal(t, orig[:cm.off], rcRead(t, fs, path))
		sweep(orig[:cm.off], puts, 0)
		rcWrite(t, fs, path, orig)
	})

	db, err = Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	rcCheck(t, db, n, nil)
	require.NoError(t, db.Close())
}

// TestCloseMarkMakesClosedDataCorruptNotTorn: Close fsyncs the data and
// appends a sync mark claiming it, so later damage to a closed DB's newest
// segment is corruption (reported, nothing truncated); without the mark (a
// crash just before Close finished) the same damage is a torn tail.
func TestCloseMarkMakesClosedDataCorruptNotTorn(t *testing.T) {
	const n = 20
	fs := vfs.NewMem()
	db, err := Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err)
	rcPut(t, db, 0, n)
	require.NoError(t, db.Close())

	files := rcSegFiles(t, fs, rcDir)
	require.Len(t, files, 1)
	path := files[0]
	orig := rcRead(t, fs, path)
	recs := rcLayout(t, orig, rcGen(t, path))
	require.Len(t, recs, n+1, "the puts and the Close mark")
	cm := recs[n]
	require.Equal(t, segment.KindSyncMark, cm.kind, "Close must append a sync mark after the data")
	claim, k := binary.Uvarint(cm.value)
	require.Positive(t, k)
	require.Equal(t, uint64(cm.off), claim, "the Close mark claims everything before it")
	for _, r := range recs[:n] {
		require.Equal(t, segment.KindPut, r.kind, "SyncNone without Syncs writes no other mark")
	}

	// Opening and closing without writes adds no mark.
	for range 2 {
		db, err = Open(rcDir, rcOpts(fs, 64<<10))
		require.NoError(t, err)
		require.NoError(t, db.Close())
		require.Equal(t, orig, rcRead(t, fs, path), "Open+Close without writes changed the segment")
	}

	// A byte in the middle of the records.
	mid := (int64(segment.HeaderSize) + cm.off) / 2
	victim := rcRecordAt(recs, mid)
	require.Equal(t, segment.KindPut, victim.kind)
	vi := -1 // record i holds key i
	for i, r := range recs {
		if r.off == victim.off {
			vi = i
		}
	}
	require.Equal(t, string(rcKey(vi)), victim.key)
	require.True(t, vi > 0 && vi < n-1, "the damage must be in the middle, got record %d", vi)
	damaged := bytes.Clone(orig)
	damaged[mid] ^= 0x55
	rcWrite(t, fs, path, damaged)
	for range 2 { // a failed Open changes nothing and releases the lock
		db, err = Open(rcDir, rcOpts(fs, 64<<10))
		if err == nil {
			_ = db.Close()
		}
		require.True(t, errors.Is(err, ErrCorrupt), "damage to closed data must be corruption, got %v", err)
		rcRequireCorrupt(t, err, path, victim.off)
		require.Contains(t, err.Error(), fmt.Sprintf("a sync mark shows the data up to offset %d had been fsynced", cm.off))
		require.Equal(t, damaged, rcRead(t, fs, path), "closed data must not be truncated away")
	}

	// Damage to the Close mark itself proves nothing: a torn tail, no key lost.
	d := bytes.Clone(orig)
	d[cm.off+1] ^= 0x55
	rcWrite(t, fs, path, d)
	db, err = Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(cm.size), st.TruncatedBytes)
	rcCheck(t, db, n, nil)
	require.NoError(t, db.Close())
	require.Equal(t, orig[:cm.off], rcRead(t, fs, path))

	// A crash just before Close finished: the same damage is a torn tail,
	// truncated at the damaged record.
	rcWrite(t, fs, path, orig)
	rcStripCloseMark(t, fs, rcDir)
	stripped := rcRead(t, fs, path)
	require.Equal(t, orig[:cm.off], stripped)
	d = bytes.Clone(stripped)
	d[mid] ^= 0x55
	rcWrite(t, fs, path, d)
	db, err = Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err, "unsynced damage is a torn tail")
	st, err = db.Stats()
	require.NoError(t, err)
	require.Equal(t, int64(len(stripped))-victim.off, st.TruncatedBytes)
	require.Equal(t, stripped[:victim.off], rcRead(t, fs, path), "truncated at the damaged record")
	rcScanEnd(t, fs, path)
	lost := map[int]bool{}
	for i := vi; i < n; i++ {
		lost[i] = true
	}
	rcCheck(t, db, n, lost)
	require.NoError(t, db.Close())
	db, err = Open(rcDir, rcOpts(fs, 64<<10))
	require.NoError(t, err)
	st, err = db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.TruncatedBytes)
	rcCheck(t, db, n, lost)
	require.NoError(t, db.Close())
}

// TestCorruptAfterOpen damages records under an open DB (MemFS rewrites a
// file in place, so its mappings see the change) and checks that reads
// report ErrCorrupt instead of returning wrong data.
func TestCorruptAfterOpen(t *testing.T) {
	fs, files := rcMultiSegment(t, 120)
	require.GreaterOrEqual(t, len(files), 2)
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	defer db.Close()

	for _, path := range []string{files[0], files[len(files)-1]} { // sealed and active
		orig := rcRead(t, fs, path)
		recs := rcLayout(t, orig, rcGen(t, path))
		victim := recs[len(recs)/2]
		require.Equal(t, segment.KindPut, victim.kind)
		key := []byte(victim.key)
		var other rcRec
		for _, r := range recs {
			if r.kind == segment.KindPut && r.key != victim.key {
				other = r
				break
			}
		}
		require.NotEmpty(t, other.key)

		for _, where := range []struct {
			name string
			off  int64
		}{
			{"value", victim.valOff + 4},
			{"key", victim.valOff - 1},
			{"crc", victim.off + 1},
			{"seq", victim.off + 5},
		} {
			d := bytes.Clone(orig)
			d[where.off] ^= 0x10
			rcWrite(t, fs, path, d)

			_, err := db.Get(key)
			rcRequireCorrupt(t, err, path, victim.off, "%s: damaged %s", path, where.name)
			err = db.View(key, func([]byte) error { return nil })
			require.ErrorIs(t, err, ErrCorrupt)
			_, err = db.Has(key)
			require.ErrorIs(t, err, ErrCorrupt)
			v, err := db.Get([]byte(other.key))
			require.NoError(t, err)
			require.Equal(t, other.value, v)

			rcWrite(t, fs, path, orig)
			v, err = db.Get(key)
			require.NoError(t, err, "restored")
			require.Equal(t, victim.value, v)
		}
	}
}

// rcStripCloseMark removes the sync mark that Close appends to the newest
// segment, to model a crash just before Close finished: the damage the
// tests then do lies past every sync mark, as a torn write would.
func rcStripCloseMark(t *testing.T, fs vfs.FS, dir string) {
	t.Helper()
	files := rcSegFiles(t, fs, dir)
	path := files[len(files)-1]
	recs := rcLayout(t, rcRead(t, fs, path), rcGen(t, path))
	if l := recs[len(recs)-1]; l.kind == segment.KindSyncMark {
		rcTruncate(t, fs, path, l.off)
	}
}

// TestTornTailBeforeEmptySegment: a segment holding only its header may
// follow the one that took the last writes (a roll that never received a
// record, or a failed creation whose removal did not reach the disk). The
// torn tail of the segment before it must still be treated as torn, not as
// corruption (a regression: only the very last file was).
func TestTornTailBeforeEmptySegment(t *testing.T) {
	fs := vfs.NewMem()
	o := rcOpts(fs, 64<<10)
	db, err := Open(rcDir, o)
	require.NoError(t, err)
	rcPut(t, db, 0, 20)
	require.NoError(t, db.Close())
	files := rcSegFiles(t, fs, rcDir)
	require.Len(t, files, 1)
	rcStripCloseMark(t, fs, rcDir)
	data := rcRead(t, fs, files[0])
	recs := rcLayout(t, data, rcGen(t, files[0]))
	last := recs[len(recs)-1]
	rcTruncate(t, fs, files[0], last.off+10) // torn last record

	gen := rcGen(t, files[0]) + 1
	h := segment.EncodeHeader(segment.Header{ID: 1, Generation: gen, DBTag: rcTag(t, fs, rcDir)})
	rcWrite(t, fs, fmt.Sprintf("%s/%s", rcDir, segment.FileName(gen)), h)

	db, err = Open(rcDir, o)
	require.NoError(t, err, "a torn tail before a header-only segment is torn, not corrupt")
	st, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 10, st.TruncatedBytes)
	rcCheck(t, db, 20, map[int]bool{19: true})
	require.NoError(t, db.Close())
}

// TestWriteOverCorruptRecord: Put and Delete of a key whose indexed record
// is unreadable return ErrCorrupt and write nothing (a regression: Put
// added a second index entry for the key and Delete silently did nothing).
func TestWriteOverCorruptRecord(t *testing.T) {
	fs, files := rcMultiSegment(t, 120)
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	defer db.Close()
	path := files[0]
	orig := rcRead(t, fs, path)
	recs := rcLayout(t, orig, rcGen(t, path))
	victim := recs[len(recs)/2]
	d := bytes.Clone(orig)
	d[victim.valOff+2] ^= 0x40
	rcWrite(t, fs, path, d)

	before, err := db.Stats()
	require.NoError(t, err)
	require.ErrorIs(t, db.Put([]byte(victim.key), []byte("new")), ErrCorrupt)
	require.ErrorIs(t, db.Delete([]byte(victim.key)), ErrCorrupt)
	var b Batch
	b.Put([]byte("unrelated"), []byte("x"))
	b.Put([]byte(victim.key), []byte("new"))
	require.ErrorIs(t, db.Write(&b), ErrCorrupt)
	after, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Keys, after.Keys, "nothing was indexed")
	logSize := func(st Stats) (n int64) {
		for _, s := range st.Segments {
			n += s.Size // includes the unflushed tail of the active segment
		}
		return n
	}
	require.Equal(t, logSize(before), logSize(after), "nothing was appended")
	ok, err := db.Has([]byte("unrelated"))
	require.NoError(t, err)
	require.False(t, ok, "the refused batch applied nothing")

	rcWrite(t, fs, path, orig) // once readable again, writes go through
	require.NoError(t, db.Put([]byte(victim.key), []byte("new")))
	v, err := db.Get([]byte(victim.key))
	require.NoError(t, err)
	require.Equal(t, "new", string(v))
	require.NoError(t, db.ix.Check())
}

// TestZeroedHeaderWithRecordsIsCorrupt: a newest segment whose header reads
// as zeros but which holds records after it is damage, reported as
// ErrCorrupt, not a torn creation (a regression: Open removed the file and
// every acknowledged record in it without a word; found while writing
// FuzzOpenMutatedSegment). A torn creation (only the header's bytes, zeroed)
// is still removed.
func TestZeroedHeaderWithRecordsIsCorrupt(t *testing.T) {
	fs, files := rcMultiSegment(t, 120)
	newest := files[len(files)-1]
	orig := rcRead(t, fs, newest)
	d := bytes.Clone(orig)
	clear(d[:segment.HeaderSize])
	rcWrite(t, fs, newest, d)
	for _, ro := range []bool{false, true} {
		o := rcOpts(fs, 4096)
		o.ReadOnly = ro
		_, err := Open(rcDir, o)
		rcRequireCorrupt(t, err, newest, 0, "read-only %v", ro)
		require.Equal(t, d, rcRead(t, fs, newest), "the damaged segment is kept")
	}
	rcWrite(t, fs, newest, orig)
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	rcCheck(t, db, 120, nil)
	require.NoError(t, db.Close())

	// A torn creation: a header's worth of zeros after the newest segment.
	gen := rcGen(t, files[len(files)-1]) + 1
	torn := fmt.Sprintf("%s/%s", rcDir, segment.FileName(gen))
	rcWrite(t, fs, torn, make([]byte, segment.HeaderSize))
	db, err = Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	rcCheck(t, db, 120, nil)
	require.NoError(t, db.Close())
	require.NotContains(t, rcSegFiles(t, fs, rcDir), torn, "a torn creation is removed")
}

// TestSealedSegmentCutInPadding: a sealed segment that ends inside a
// record's zero padding was cut short after it was fsynced (only the newest
// segment can be torn), maybe losing the records after the cut: Open
// reports ErrCorrupt, read-only or not (a regression: a writable Open tried
// to extend the read-only file and failed with EBADF, and a read-only Open
// silently lost the records after the cut; found by FuzzOpenMutatedSegment).
func TestSealedSegmentCutInPadding(t *testing.T) {
	fs, files := rcMultiSegment(t, 120)
	require.GreaterOrEqual(t, len(files), 2)
	sealed := files[0]
	orig := rcRead(t, fs, sealed)
	recs := rcLayout(t, orig, rcGen(t, sealed))
	cut := int64(-1)
	for _, r := range recs[len(recs)/2:] {
		var tmp [binary.MaxVarintLen64]byte
		unpadded := r.off + 12 + int64(binary.PutUvarint(tmp[:], uint64(len(r.key)))+
			binary.PutUvarint(tmp[:], uint64(len(r.value)))+len(r.key)+len(r.value))
		if unpadded < r.off+int64(r.size) {
			cut = unpadded
			break
		}
	}
	require.Positive(t, cut, "a record with padding")
	rcWrite(t, fs, sealed, orig[:cut])
	for _, ro := range []bool{true, false} {
		o := rcOpts(fs, 4096)
		o.ReadOnly = ro
		_, err := Open(rcDir, o)
		rcRequireCorrupt(t, err, sealed, cut, "read-only %v", ro)
		require.Equal(t, orig[:cut], rcRead(t, fs, sealed), "the damaged segment is kept as it is")
	}
	rcWrite(t, fs, sealed, orig)
	db, err := Open(rcDir, rcOpts(fs, 4096))
	require.NoError(t, err)
	rcCheck(t, db, 120, nil)
	require.NoError(t, db.Close())
}
