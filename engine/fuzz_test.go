package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Fuzz targets for opening a directory with a mutated file. Each execution
// copies a small closed database held in memory, replaces one file with the
// fuzzer's bytes and opens it. Seeds are the files' real contents (added
// with f.Add) and the small corpora under testdata/fuzz.
//
// fuzzAllocLimit bounds what one Open may allocate on the Go heap: the
// decoders check every length against the format's limits (a snapshot frame
// is at most 4 MiB, a segment table at most 1024 entries) before
// allocating, so no input can make Open allocate more than a few of those.
const fuzzAllocLimit = 64 << 20

// fuzzAllocs returns the bytes allocated on the heap by fn.
func fuzzAllocs(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func fuzzOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, SegmentSize: 4096, WriteBufferSize: 4096, Sync: SyncNone,
		CompactionThreshold: -1, ExpiryInterval: -1, SnapshotInterval: 1 << 40,
		IndexReserve: 1 << 26, Logger: discardLogger}
}

// snapFuzzBase is FuzzSnapshotLoad's database: a history of puts,
// overwrites, deletes, batches, a compaction and snapshots, closed. snaps
// holds the snapshot files written along the way (all valid for the final
// log: Open replays what follows them), the last being the one on disk.
type snapFuzzBase struct {
	fs    *vfs.MemFS
	name  string // the snapshot file on disk
	snaps [][]byte
	state map[string]string
	full  *DB // the full replay, open read-only for the whole run
}

var snapFuzz = sync.OnceValue(func() *snapFuzzBase {
	b := &snapFuzzBase{fs: vfs.NewMem()}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(writeFuzzIdentity(b.fs))
	db, err := Open("/db", fuzzOpts(b.fs))
	must(err)
	rnd := rand.New(rand.NewPCG(9, 9))
	grab := func() {
		for _, n := range mustList(b.fs) {
			if _, ok := parseSnapName(n); ok {
				b.snaps = append(b.snaps, mustRead(b.fs, "/db/"+n))
				b.name = "/db/" + n
			}
		}
	}
	for round := range 4 {
		for i := range 120 {
			k := fmt.Appendf(nil, "k%03d", rnd.IntN(150))
			switch rnd.IntN(6) {
			case 0:
				must(db.Delete(k))
			case 1:
				var bt Batch
				bt.Put(k, fmt.Appendf(nil, "batch-%d-%d", round, i))
				bt.Delete(fmt.Appendf(nil, "k%03d", rnd.IntN(150)))
				must(db.Write(&bt))
			default:
				must(db.Put(k, fmt.Appendf(nil, "v-%d-%d-%s", round, i, bytes.Repeat([]byte{'x'}, rnd.IntN(60)))))
			}
		}
		if round == 1 {
			must(db.Compact()) // writes a snapshot
		} else {
			must(db.Snapshot())
		}
		grab()
	}
	for i := range 30 { // replayed on top of the last snapshot
		must(db.Put(fmt.Appendf(nil, "k%03d", i), []byte("tail")))
	}
	must(db.Sync())
	db.mu.Lock()
	db.failLocked(errors.New("fuzz base: keep the last snapshot, not one written by Close"))
	db.mu.Unlock()
	if err := db.Close(); !errors.Is(err, ErrFailed) {
		panic(err)
	}
	o := fuzzOpts(b.fs)
	o.ReadOnly, o.DisableSnapshots = true, true
	b.full, err = Open("/db", o)
	must(err)
	b.state = map[string]string{}
	must(b.full.ForEach(func(k, v []byte) error { b.state[string(k)] = string(v); return nil }))
	return b
})

// fuzzMeta is the fuzz bases' fixed identity: the seed corpora under
// testdata/fuzz hold segment headers with its tag and snapshots with its id
// and fingerprints, so they stay meaningful from run to run.
var fuzzMeta = dbMeta{id: DBID{0xf0, 0x22, 0x7a, 0x31, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
	hashFn: hashSipHash24, key: [16]byte{15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}}

// writeFuzzIdentity gives the fuzz base directory /db the fixed identity.
func writeFuzzIdentity(fs vfs.FS) error {
	if err := fs.MkdirAll("/db", 0o755); err != nil {
		return err
	}
	return writeMeta(fs, "/db", &fuzzMeta)
}

func mustList(fs vfs.FS) []string {
	names, err := fs.List("/db")
	if err != nil {
		panic(err)
	}
	return names
}

func mustRead(fs vfs.FS, name string) []byte {
	f, err := fs.Open(name)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		panic(err)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		panic(err)
	}
	return b
}

// FuzzSnapshotLoad writes the fuzzer's bytes as the database's index
// snapshot and opens it. Open must not panic or allocate beyond the limits,
// must not fail (a snapshot that fails a check is ignored and the log
// replayed), and must give exactly the index of a full replay: the same
// pairs and the same index entries. When the snapshot was used, a writable
// open must agree too.
func FuzzSnapshotLoad(f *testing.F) {
	base := snapFuzz()
	for _, s := range base.snaps {
		f.Add(s)
	}
	last := base.snaps[len(base.snaps)-1]
	f.Add(last[:len(last)-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		img := base.fs.CrashClone(nil)
		writeFileNoT(img, base.name, data)
		o := fuzzOpts(img)
		o.ReadOnly = true
		var db *DB
		var err error
		if n := fuzzAllocs(func() { db, err = Open("/db", o) }); n > fuzzAllocLimit {
			t.Fatalf("Open allocated %d bytes", n)
		}
		if err != nil {
			t.Fatalf("a bad snapshot must be ignored, Open failed: %v", err)
		}
		used := db.st.snapshotLoaded.Load()
		if !used {
			// Ignored: the index is a full replay of the same log.
			if n, want := db.ix.Len(), base.full.ix.Len(); n != want {
				t.Fatalf("fallback replay: %d entries, want %d", n, want)
			}
			if err := db.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			return
		}
		fuzzSameAsReplay(t, db, base, "read-only")
		if err := db.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if !used {
			return
		}
		w, err := Open("/db", fuzzOpts(img))
		if err != nil {
			t.Fatalf("writable open: %v", err)
		}
		defer w.Close()
		fuzzSameAsReplay(t, w, base, "writable")
	})
}

// fuzzSameAsReplay checks db against the full replay.
func fuzzSameAsReplay(t *testing.T, db *DB, base *snapFuzzBase, what string) {
	t.Helper()
	got := map[string]string{}
	err := db.ForEach(func(k, v []byte) error { got[string(k)] = string(v); return nil })
	if err != nil {
		t.Fatalf("%s: ForEach: %v", what, err)
	}
	if len(got) != len(base.state) {
		t.Fatalf("%s: %d keys, the log has %d", what, len(got), len(base.state))
	}
	for k, v := range base.state {
		if got[k] != v {
			t.Fatalf("%s: key %s = %q, the log says %q", what, k, got[k], v)
		}
	}
	rep := &VerifyReport{}
	compareIndexes(db, base.full, rep)
	if !rep.OK() {
		t.Fatalf("%s: index differs from a full replay: %v", what, rep.Problems)
	}
	if err := db.ix.Check(); err != nil {
		t.Fatalf("%s: index invariants: %v", what, err)
	}
}

// writeFileNoT replaces name's contents durably (no *testing.T needed).
func writeFileNoT(fs vfs.FS, name string, b []byte) {
	f, err := fs.Create(name)
	if err != nil {
		panic(err)
	}
	if _, err := f.Write(b); err != nil {
		panic(err)
	}
	if err := f.Sync(); err != nil {
		panic(err)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
}

// segFuzzBase is FuzzOpenMutatedSegment's database: every key written once
// (no overwrite, no delete), so a read can only be right, absent or
// corrupt; closed with a snapshot.
type segFuzzBase struct {
	fs     *vfs.MemFS
	files  []string
	imgs   [][]byte
	where  map[string]segPos // key -> the record holding it
	bounds []map[int]bool    // per file: the offsets where records start
}

type segPos struct {
	file     int
	off, end int64 // the record, and the end of its unit (a batch ends with its commit)
	value    string
}

var segFuzz = sync.OnceValue(func() *segFuzzBase {
	b := &segFuzzBase{fs: vfs.NewMem(), where: map[string]segPos{}}
	if err := writeFuzzIdentity(b.fs); err != nil {
		panic(err)
	}
	db, err := Open("/db", fuzzOpts(b.fs))
	if err != nil {
		panic(err)
	}
	for i := range 150 {
		k := fmt.Sprintf("key-%03d", i)
		v := fmt.Sprintf("value-%03d-%s", i, bytes.Repeat([]byte{'v'}, 10+i%50))
		if i%10 == 9 {
			var bt Batch
			bt.Put([]byte(k), []byte(v))
			err = db.Write(&bt)
		} else {
			err = db.Put([]byte(k), []byte(v))
		}
		if err != nil {
			panic(err)
		}
	}
	if err := db.Close(); err != nil {
		panic(err)
	}
	for _, n := range mustList(b.fs) {
		gen, ok := segment.ParseFileName(n)
		if !ok {
			continue
		}
		data := mustRead(b.fs, "/db/"+n)
		b.files = append(b.files, "/db/"+n)
		b.imgs = append(b.imgs, data)
		lim := segment.Limits{MaxKey: segment.MaxKeyLen, MaxValue: 4096}
		var pending []segPos // a batch's puts, until its commit
		var keys []string
		bounds := map[int]bool{len(data): true}
		b.bounds = append(b.bounds, bounds)
		for off := int64(segment.HeaderSize); off < int64(len(data)); {
			bounds[int(off)] = true
			r, size, err := segment.Decode(data[off:], gen, off, lim)
			if err != nil {
				panic(err)
			}
			end := off + int64(size)
			switch {
			case r.Kind == segment.KindPut && r.Flags&segment.FlagBatch != 0:
				pending = append(pending, segPos{file: len(b.files) - 1, off: off, value: string(r.Value)})
				keys = append(keys, string(r.Key))
			case r.Kind == segment.KindPut:
				b.where[string(r.Key)] = segPos{file: len(b.files) - 1, off: off, end: end, value: string(r.Value)}
			case r.Kind == segment.KindBatchCommit:
				for i, p := range pending {
					p.end = end // the unit ends with its commit
					b.where[keys[i]] = p
				}
				pending, keys = pending[:0], keys[:0]
			}
			off = end
		}
	}
	if len(b.files) < 3 {
		panic(fmt.Sprintf("fuzz base has %d segments", len(b.files)))
	}
	return b
})

// FuzzOpenMutatedSegment replaces one segment file (chosen by which) with
// the fuzzer's bytes and opens the directory for writing, with or without
// its snapshot. Open must not panic or allocate beyond the limits, and may
// only fail with ErrCorrupt. If it opens, every key reads its value or
// ErrCorrupt, and reopening gives the same answers. A key may read as
// absent only if its record (with the rest of its batch) does not lie
// wholly before the first changed byte, and, in a sealed segment, only if
// the file was cut cleanly at a record boundary: a known limitation (a
// sealed segment cut at a record boundary looks whole; see the report of
// issue 6). Anything else that loses a key of a sealed segment must be
// reported as corruption.
func FuzzOpenMutatedSegment(f *testing.F) {
	base := segFuzz()
	for i, img := range base.imgs {
		f.Add(img, uint8(i), true)
		f.Add(img, uint8(i), false)
	}
	newest := base.imgs[len(base.imgs)-1]
	f.Add(newest[:len(newest)-20], uint8(len(base.imgs)-1), false)
	f.Add(newest[:segment.HeaderSize], uint8(len(base.imgs)-1), true)
	f.Fuzz(func(t *testing.T, data []byte, which uint8, snap bool) {
		fi := int(which) % len(base.files)
		orig := base.imgs[fi]
		// The first changed byte, not counting the header's last 4 bytes,
		// which are reserved and carry nothing (DecodeHeader ignores them).
		diff := 0
		for diff < len(data) && diff < len(orig) && (data[diff] == orig[diff] || diff >= 28 && diff < segment.HeaderSize) {
			diff++
		}
		img := base.fs.CrashClone(nil)
		writeFileNoT(img, base.files[fi], data)
		o := fuzzOpts(img)
		o.DisableSnapshots = !snap
		var db *DB
		var err error
		if n := fuzzAllocs(func() { db, err = Open("/db", o) }); n > fuzzAllocLimit {
			t.Fatalf("Open allocated %d bytes", n)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open may only fail with ErrCorrupt, got %v", err)
			}
			return
		}
		// Where keys of the mutated file may go missing: past the change in
		// the newest segment (a torn tail), past a clean cut in a sealed one.
		lossFrom := int64(diff)
		if fi != len(base.files)-1 && !(diff == len(data) && len(data) < len(orig) && base.bounds[fi][len(data)]) {
			lossFrom = 1 << 40
		}
		answers := fuzzReadAll(t, db, base, fi, lossFrom)
		if err := db.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		db, err = Open("/db", o)
		if err != nil {
			t.Fatalf("second open: %v", err)
		}
		defer db.Close()
		again := fuzzReadAll(t, db, base, fi, lossFrom)
		for k, a := range answers {
			if again[k] != a {
				t.Fatalf("key %s: %s, then %s after a reopen", k, a, again[k])
			}
		}
	})
}

// fuzzReadAll reads every key of the base and returns the answers ("ok",
// "absent", "corrupt"). Keys of file fi whose unit ends past lossFrom may
// be absent.
func fuzzReadAll(t *testing.T, db *DB, base *segFuzzBase, fi int, lossFrom int64) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, p := range base.where {
		v, err := db.Get([]byte(k))
		switch {
		case err == nil:
			if string(v) != p.value {
				t.Fatalf("key %s read %q, want %q", k, v, p.value)
			}
			out[k] = "ok"
		case errors.Is(err, ErrCorrupt):
			out[k] = "corrupt"
		case errors.Is(err, ErrNotFound):
			if p.file != fi || p.end <= lossFrom {
				t.Fatalf("key %s (file %d, offset %d) is missing; the mutation of file %d allows losses from %d", k, p.file, p.off, fi, lossFrom)
			}
			out[k] = "absent"
		default:
			t.Fatalf("key %s: %v", k, err)
		}
	}
	return out
}

// TestWriteFuzzCorpus writes the committed seed corpora under
// testdata/fuzz when MARLIN_WRITE_CORPUS=1 (they are generated, not
// hand-made; the f.Add seeds cover the full-size files).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MARLIN_WRITE_CORPUS") != "1" {
		t.Skip("set MARLIN_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	sb := snapFuzz()
	last := sb.snaps[len(sb.snaps)-1]
	flipped := bytes.Clone(last)
	flipped[len(flipped)-20] ^= 1 // in the trailer frame
	writeCorpus(t, "FuzzSnapshotLoad", "valid", corpusBytes(last))
	writeCorpus(t, "FuzzSnapshotLoad", "truncated", corpusBytes(last[:len(last)/2]))
	writeCorpus(t, "FuzzSnapshotLoad", "trailer-flipped", corpusBytes(flipped))
	sg := segFuzz()
	newest := sg.imgs[len(sg.imgs)-1]
	writeCorpus(t, "FuzzOpenMutatedSegment", "newest-torn", corpusBytes(newest[:len(newest)/3]), corpusByte(uint8(len(sg.imgs)-1)), "bool(false)")
	writeCorpus(t, "FuzzOpenMutatedSegment", "sealed-header-only", corpusBytes(sg.imgs[0][:segment.HeaderSize]), corpusByte(0), "bool(true)")
}

func corpusBytes(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }
func corpusByte(b uint8) string   { return fmt.Sprintf("byte(%q)", rune(b)) }

func writeCorpus(t *testing.T, target, name string, args ...string) {
	dir := filepath.Join("testdata", "fuzz", target)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	body := "go test fuzz v1\n" + strings.Join(args, "\n") + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
}
