package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// walkAll runs an iterator with the given read size to its end and
// returns the pairs; a key yielded twice fails the test.
func walkAll(t *testing.T, db *DB, o IterOptions) map[string]string {
	t.Helper()
	it := db.NewIteratorWith(o)
	defer it.Close()
	got := map[string]string{}
	for it.Next() {
		k := string(it.Key())
		_, dup := got[k]
		require.False(t, dup, "key %q yielded twice", k)
		got[k] = string(it.Value())
	}
	require.NoError(t, it.Err())
	return got
}

// TestScanMatchesModel: random puts, overwrites, deletes and TTLs (some
// expiring) over many small segments, with compaction passes between
// rounds; a walk yields exactly the model's contents, with read sizes
// smaller than a record (records straddle reads), and the default.
func TestScanMatchesModel(t *testing.T) {
	clk := newFakeClock()
	fs := vfs.NewMem()
	o := clk.opts(testOpts(fs))
	o.CompactionThreshold = -1 // passes run only when the test says
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	rnd := rand.New(rand.NewPCG(7, 11))
	type entry struct {
		v      string
		expiry time.Time // zero: none
	}
	model := map[string]entry{}
	for round := range 6 {
		for range 3000 {
			k := fmt.Sprintf("k%04d", rnd.IntN(2000))
			switch x := rnd.IntN(10); {
			case x < 5:
				v := strings.Repeat(string(rune('a'+rnd.IntN(26))), rnd.IntN(600))
				require.NoError(t, db.Put([]byte(k), []byte(v)))
				model[k] = entry{v: v}
			case x < 7:
				v := fmt.Sprintf("ttl%d", rnd.IntN(1000))
				ttl := time.Duration(1+rnd.IntN(100)) * time.Second
				require.NoError(t, db.PutTTL([]byte(k), []byte(v), ttl))
				model[k] = entry{v: v, expiry: clk.Now().Add(ttl)}
			default:
				require.NoError(t, db.Delete([]byte(k)))
				delete(model, k)
			}
		}
		clk.Advance(20 * time.Second)
		if round%2 == 1 {
			require.NoError(t, db.Compact())
		}
		want := map[string]string{}
		for k, e := range model {
			if e.expiry.IsZero() || e.expiry.After(clk.Now()) {
				want[k] = e.v
			}
		}
		st, err := db.Stats()
		require.NoError(t, err)
		require.Greater(t, len(st.Segments), 5)
		for _, chunk := range []int{100, 4096, 0} {
			require.Equal(t, want, walkAll(t, db, IterOptions{chunk: chunk}), "round %d chunk %d", round, chunk)
		}
		got := map[string]string{}
		require.NoError(t, db.ForEach(func(k, v []byte) error { got[string(k)] = string(v); return nil }))
		require.Equal(t, want, got)
	}
	db.mu.Lock()
	require.Empty(t, db.scans, "finished walks must not pin segments")
	db.mu.Unlock()
}

// TestScanWriteBuffer: pairs still in the write buffer (never flushed)
// are yielded, and so are pairs with values larger than the buffer
// (written straight to the file).
func TestScanWriteBuffer(t *testing.T) {
	o := testOpts(vfs.NewMem())
	o.WriteBufferSize = 1 << 20
	o.MaxValueSize = 3 << 20
	o.SegmentSize = 4 << 20
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	want := map[string]string{}
	for i := range 200 {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		if i%50 == 7 {
			v = strings.Repeat("x", 2<<20)
		}
		require.NoError(t, db.Put([]byte(k), []byte(v)))
		want[k] = v
	}
	require.Positive(t, db.tail.n.Load(), "part of the data must still be in the buffer")
	require.Equal(t, want, walkAll(t, db, IterOptions{chunk: 512}))
	require.Equal(t, want, walkAll(t, db, IterOptions{}))
}

// TestScanPinsAgainstCompaction: a walk that has started sees every key
// untouched during it exactly once although a full compaction runs
// midway, which (without the pin) would copy the live records of the
// segments not yet read to the head of the log, beyond the walk's end,
// and retire those segments. Segments already read are compacted.
func TestScanPinsAgainstCompaction(t *testing.T) {
	o := testOpts(vfs.NewMem())
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	val := bytes.Repeat([]byte("v"), 200)
	for i := range 3000 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%04d", i), val))
	}
	// Dead bytes everywhere: every segment qualifies for compaction.
	for i := 0; i < 3000; i += 3 {
		require.NoError(t, db.Delete(fmt.Appendf(nil, "k%04d", i)))
	}
	it := db.NewIteratorWith(IterOptions{chunk: 1024})
	defer it.Close()
	got := map[string]int{}
	for n := 0; it.Next(); n++ {
		got[string(it.Key())]++
		if n == 300 {
			st, err := db.Stats()
			require.NoError(t, err)
			before := st.SegmentsRemoved
			require.NoError(t, db.Compact())
			st, err = db.Stats()
			require.NoError(t, err)
			require.Greater(t, st.SegmentsRemoved, before, "segments the walk finished are compacted")
		}
	}
	require.NoError(t, it.Err())
	require.Len(t, got, 2000)
	for i := range 3000 {
		k := fmt.Sprintf("k%04d", i)
		if i%3 == 0 {
			require.Zero(t, got[k], k)
		} else {
			require.Equal(t, 1, got[k], k)
		}
	}
	// After the walk nothing is pinned: a pass compacts the rest.
	require.NoError(t, db.Compact())
	require.Equal(t, 2000, len(walkAll(t, db, IterOptions{})))
}

// TestScanConcurrent: walks run while writers overwrite, delete and create
// keys and compaction runs in a loop; no walk yields a key twice, every
// key untouched during the walks is yielded with its value, and every
// yielded pair is a value the key had. Run with -race.
func TestScanConcurrent(t *testing.T) {
	o := testOpts(vfs.NewMem())
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	const cold, hot = 2000, 500
	for i := range cold {
		require.NoError(t, db.Put(fmt.Appendf(nil, "cold%04d", i), fmt.Appendf(nil, "c%d", i)))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() { stop.Store(true); wg.Wait() }() // before db.Close, also when a check fails
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(1, 2))
		for !stop.Load() {
			k := fmt.Appendf(nil, "hot%04d", rnd.IntN(hot))
			var err error
			if rnd.IntN(4) == 0 {
				err = db.Delete(k)
			} else {
				err = db.Put(k, fmt.Appendf(append([]byte(nil), k...), "=%d", rnd.IntN(1e6)))
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // compactor
		defer wg.Done()
		for !stop.Load() {
			if err := db.Compact(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	walks := 8
	if testing.Short() {
		walks = 3
	}
	for w := range walks {
		got := walkAll(t, db, IterOptions{chunk: []int{256, 4096, 0}[w%3]})
		for i := range cold {
			k := fmt.Sprintf("cold%04d", i)
			require.Equal(t, fmt.Sprintf("c%d", i), got[k], "walk %d: %s", w, k)
		}
		for k, v := range got {
			if strings.HasPrefix(k, "hot") {
				require.True(t, strings.HasPrefix(v, k+"="), "walk %d: %s=%s", w, k, v)
			} else {
				require.True(t, strings.HasPrefix(k, "cold"), k)
			}
		}
	}
}

// countingFS records the ReadAt calls on segment files.
type countingFS struct {
	vfs.FS
	mu    sync.Mutex
	on    bool
	reads []fileRead
}

type fileRead struct {
	name string
	off  int64
	n    int
}

type countingFile struct {
	vfs.File
	fs   *countingFS
	name string
}

func (c *countingFS) wrap(f vfs.File, name string, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".seg") {
		return f, err
	}
	return &countingFile{File: f, fs: c, name: name}, nil
}

func (c *countingFS) Create(name string) (vfs.File, error) {
	f, err := c.FS.Create(name)
	return c.wrap(f, name, err)
}

func (c *countingFS) Open(name string) (vfs.File, error) {
	f, err := c.FS.Open(name)
	return c.wrap(f, name, err)
}

func (c *countingFS) OpenReadWrite(name string) (vfs.File, error) {
	f, err := c.FS.OpenReadWrite(name)
	return c.wrap(f, name, err)
}

func (f *countingFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	if f.fs.on {
		f.fs.reads = append(f.fs.reads, fileRead{f.name, off, len(p)})
	}
	f.fs.mu.Unlock()
	return f.File.ReadAt(p, off)
}

// TestScanReadsInLogOrder: a walk reads the segment files in generation
// order, each from its start to its end in consecutive chunk-sized reads:
// a few reads per segment, not one per key.
func TestScanReadsInLogOrder(t *testing.T) {
	cfs := &countingFS{FS: vfs.NewMem()}
	o := testOpts(cfs)
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 5000 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 100)))
	}
	require.NoError(t, db.Sync())
	cfs.mu.Lock()
	cfs.on = true
	cfs.mu.Unlock()
	const chunk = 16 << 10
	require.Len(t, walkAll(t, db, IterOptions{chunk: chunk}), 5000)
	cfs.mu.Lock()
	reads := slices.Clone(cfs.reads)
	cfs.mu.Unlock()

	st, err := db.Stats()
	require.NoError(t, err)
	var names []string
	var total int64
	for _, s := range st.Segments {
		names = append(names, s.Name)
		total += s.Size - segment.HeaderSize
	}
	slices.Sort(names) // file names sort by generation
	require.Less(t, len(reads), int(total/chunk)+2*len(names), "reads: %d", len(reads))
	var order []string
	next := map[string]int64{}
	for _, r := range reads {
		if len(order) == 0 || order[len(order)-1] != r.name {
			require.NotContains(t, order, r.name, "segment %s read again after another", r.name)
			order = append(order, r.name)
			next[r.name] = segment.HeaderSize
		}
		require.Equal(t, next[r.name], r.off, "reads of %s are consecutive", r.name)
		next[r.name] = r.off + int64(r.n)
		require.LessOrEqual(t, r.n, chunk)
	}
	require.Equal(t, names, order)
	for _, s := range st.Segments {
		require.Equal(t, s.Size, next[s.Name], "%s read to its end", s.Name)
	}
}

// TestScanDamage: a damaged record the index points at ends a plain walk
// with ErrCorrupt after the readable pairs (all pairs after it in the
// same segment included) and is reported by SkipCorrupt; damage in a
// record no entry points at (overwritten) changes nothing.
func TestScanDamage(t *testing.T) {
	fs := vfs.NewMem()
	o := testOpts(fs)
	o.CompactionThreshold = -1
	o.DisableSnapshots = false
	db, err := Open("/db", o)
	require.NoError(t, err)
	for i := range 1000 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200)))
	}
	deadLoc := db.locOf(t, []byte("k5"))
	require.NoError(t, db.Put([]byte("k5"), []byte("new"))) // the old record is dead
	liveLoc := db.locOf(t, []byte("k17"))
	name := func(loc uint64) (string, int64) {
		id, off := segment.SplitLoc(loc)
		return db.segs[id].Load().name, off
	}
	deadName, deadOff := name(deadLoc)
	liveName, liveOff := name(liveLoc)
	require.NoError(t, db.Close())

	ro := testOpts(fs)
	ro.ReadOnly = true
	flip := func(file string, off int64) {
		b := readFile(t, fs, file)
		b[off+20] ^= 0xff
		writeFile(t, fs, file, b)
	}

	flip(deadName, deadOff)
	db, err = Open("/db", ro)
	require.NoError(t, err)
	got := walkAll(t, db, IterOptions{chunk: 4096})
	require.Len(t, got, 1000)
	require.Equal(t, "new", got["k5"])
	it := db.NewIteratorWith(IterOptions{SkipCorrupt: true})
	for it.Next() {
	}
	require.NoError(t, it.Err())
	require.Zero(t, it.Skipped().Count, "dead damage is not a lost pair")
	require.NoError(t, db.Close())

	flip(liveName, liveOff)
	db, err = Open("/db", ro)
	require.NoError(t, err)
	defer db.Close()
	n := 0
	err = db.ForEach(func(k, v []byte) error { n++; return nil })
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), liveName)
	require.Less(t, n, 999)
	for _, chunk := range []int{64, 4096, 0} {
		it := db.NewIteratorWith(IterOptions{SkipCorrupt: true, chunk: chunk})
		seen := map[string]bool{}
		for it.Next() {
			seen[string(it.Key())] = true
		}
		require.NoError(t, it.Err())
		require.Len(t, seen, 999)
		require.False(t, seen["k17"])
		sk := it.Skipped()
		require.EqualValues(t, 1, sk.Count)
		require.Equal(t, liveName, sk.Records[0].File)
		require.Equal(t, liveOff, sk.Records[0].Offset)
		require.ErrorIs(t, sk.Records[0].Err, ErrCorrupt)
	}
}

// TestScanReadError: a segment whose reads fail (EIO) ends a plain walk
// with ErrIO; SkipCorrupt reports its indexed records, names the file,
// and yields every pair of the other segments.
func TestScanReadError(t *testing.T) {
	var bad atomic.Pointer[string]
	efs := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if p := bad.Load(); op == vfs.OpRead && p != nil && name == *p {
			return vfs.ErrInjectedIO
		}
		return nil
	}))
	o := testOpts(efs)
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 1000 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200)))
	}
	require.NoError(t, db.Sync())
	id, _ := segment.SplitLoc(db.locOf(t, []byte("k500")))
	sf := db.segs[id].Load()
	inBad := 0
	for i := range 1000 {
		if lid, _ := segment.SplitLoc(db.locOf(t, fmt.Appendf(nil, "k%d", i))); lid == id {
			inBad++
		}
	}
	require.Positive(t, inBad)
	bad.Store(&sf.name)

	err = db.ForEach(func(k, v []byte) error { return nil })
	require.ErrorIs(t, err, ErrIO)
	require.Contains(t, err.Error(), sf.name)

	it := db.NewIteratorWith(IterOptions{SkipCorrupt: true, chunk: 4096})
	n := 0
	for it.Next() {
		n++
	}
	require.NoError(t, it.Err())
	sk := it.Skipped()
	require.EqualValues(t, inBad, sk.Count)
	require.Equal(t, 1000-inBad, n)
	require.Equal(t, sf.name, sk.Records[0].File)
	require.ErrorIs(t, sk.Records[0].Err, ErrIO)
}

// TestScanCloseReleasesPin: an iterator closed early leaves nothing pinned
// (compaction may rewrite every segment again).
func TestScanCloseReleasesPin(t *testing.T) {
	o := testOpts(vfs.NewMem())
	o.CompactionThreshold = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	for i := range 1000 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200)))
	}
	it := db.NewIterator()
	require.True(t, it.Next())
	db.mu.Lock()
	require.Len(t, db.scans, 1)
	require.True(t, db.scanPinnedLocked(db.active.gen))
	db.mu.Unlock()
	require.NoError(t, it.Close())
	db.mu.Lock()
	require.Empty(t, db.scans)
	db.mu.Unlock()

	// An iterator dropped without Close releases its pin when collected.
	func() {
		it := db.NewIterator()
		require.True(t, it.Next())
	}()
	require.Eventually(t, func() bool {
		runtime.GC()
		db.mu.Lock()
		defer db.mu.Unlock()
		return len(db.scans) == 0
	}, 5*time.Second, 10*time.Millisecond)
}

// TestIteratorItem: the iterator reports each pair's version as
// AppendItem does (sequence number and expiry), after a compaction moved
// the records too.
func TestIteratorItem(t *testing.T) {
	db, err := Open("/db", testOpts(vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("a"), []byte("1")))
	require.NoError(t, db.PutTTL([]byte("b"), []byte("2"), time.Hour))
	require.NoError(t, db.Put([]byte("a"), []byte("3")))
	for round := range 2 {
		it := db.NewIterator()
		n := 0
		for it.Next() {
			_, want, err := db.AppendItem(nil, it.Key())
			require.NoError(t, err)
			require.Equal(t, want, it.Item(), "round %d key %q", round, it.Key())
			require.NotZero(t, it.Item().Seq)
			n++
		}
		require.NoError(t, it.Err())
		require.Equal(t, 2, n)
		require.NoError(t, db.Compact())
	}
}
