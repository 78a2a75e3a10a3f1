package index

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// Keys in these tests are small ints ("ids"). The location stored for a key
// packs a version above the id, so an overwrite changes the location and a
// reader can tell which write it saw; keyOf recovers the id, which models the
// engine reading the record at a location and comparing its key.
const idBits = 24

func locOf(id int, ver uint64) uint64 { return ver<<idBits | uint64(id+1) }
func keyOf(loc uint64) int            { return int(loc&(1<<idBits-1)) - 1 }
func verOf(loc uint64) uint64         { return loc >> idBits }

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// mkHash builds a hash with the given shard and fingerprint; low fills the
// bits Split ignores.
func mkHash(shard int, fp, low uint64) uint64 {
	if fp >= 1<<FPBits {
		panic("mkHash: fingerprint wider than FPBits")
	}
	return uint64(shard)<<(64-ShardBits) | fp<<(64-ShardBits-FPBits) | low&(1<<(64-ShardBits-FPBits)-1)
}

// fpForHome returns a fingerprint whose home is slot h in a table of
// capacity c (+Overflow slots), offset by k within that home's range.
func fpForHome(h, c int, k uint64) uint64 {
	fp := (uint64(h)<<FPBits + uint64(c) - 1) / uint64(c)
	return fp + k
}

func newIndex(t testing.TB, reserve int) *Index {
	t.Helper()
	ix, err := New(reserve)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ix.Close()) })
	return ix
}

// shardSlots returns a copy of shard sn's slot array (nil if none).
func (ix *Index) shardSlots(sn int) []uint64 {
	sh := &ix.shards[sn]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	d := sh.table.Load()
	if d == 0 {
		return nil
	}
	return slices.Clone(ix.view(d))
}

func shardCap(ix *Index, sn int) int {
	d := ix.shards[sn].table.Load()
	if d == 0 {
		return 0
	}
	_, n := unpack(d)
	return n - Overflow
}

// model checks an Index against a Go map, single-threaded.
type model struct {
	t    testing.TB
	ix   *Index
	hash []uint64       // id -> hash
	cur  map[int]uint64 // id -> current location
	ver  uint64
}

func newModel(t testing.TB, ix *Index, hash []uint64) *model {
	return &model{t: t, ix: ix, hash: hash, cur: make(map[int]uint64)}
}

func (m *model) nextLoc(id int) uint64 {
	m.ver = m.ver%1023 + 1
	return locOf(id, m.ver)
}

// checkCandidate fails if the index offers the caller a location whose key
// has a different shard or fingerprint than the key looked for. (That is
// legal only while writers run; the model is single-threaded.)
func (m *model) checkCandidate(id int, loc uint64) {
	k := keyOf(loc)
	if k < 0 || k >= len(m.hash) {
		m.t.Fatalf("key %d: offered location %#x of no key", id, loc)
	}
	s1, f1 := Split(m.hash[id])
	s2, f2 := Split(m.hash[k])
	if s1 != s2 || f1 != f2 {
		m.t.Fatalf("key %d (shard %d fp %#x): offered location %#x of key %d (shard %d fp %#x)", id, s1, f1, loc, k, s2, f2)
	}
}

func (m *model) put(id int) {
	loc := m.nextLoc(id)
	old, found, replaced, err := m.ix.Put(m.hash[id], loc, func(o uint64) (bool, bool) {
		m.checkCandidate(id, o)
		return keyOf(o) == id, true
	})
	if err != nil {
		m.t.Fatalf("put %d: %v", id, err)
	}
	prev, had := m.cur[id]
	if found != had || replaced != had || old != prev {
		m.t.Fatalf("put %d: got old=%#x found=%v replaced=%v, want old=%#x found=%v", id, old, found, replaced, prev, had)
	}
	m.cur[id] = loc
}

func (m *model) del(id int) {
	loc, ok := m.ix.Delete(m.hash[id], func(o uint64) bool {
		m.checkCandidate(id, o)
		return keyOf(o) == id
	})
	prev, had := m.cur[id]
	if ok != had || loc != prev {
		m.t.Fatalf("delete %d: got %#x,%v want %#x,%v", id, loc, ok, prev, had)
	}
	delete(m.cur, id)
}

func (m *model) lookup(id int) {
	var got uint64
	ok := m.ix.Lookup(m.hash[id], func(o uint64) bool {
		m.checkCandidate(id, o)
		if keyOf(o) == id {
			got = o
			return true
		}
		return false
	})
	want, had := m.cur[id]
	if ok != had || got != want {
		m.t.Fatalf("lookup %d (hash %#x): got %#x,%v want %#x,%v", id, m.hash[id], got, ok, want, had)
	}
}

// verify looks up every id, compares every shard's entries with the model
// and runs Check.
func (m *model) verify() {
	m.t.Helper()
	require.NoError(m.t, m.ix.Check())
	for id := range m.hash {
		m.lookup(id)
	}
	require.Equal(m.t, int64(len(m.cur)), m.ix.Len())
	byShard := map[int][]uint64{}
	for id, loc := range m.cur {
		sn, _ := Split(m.hash[id])
		byShard[sn] = append(byShard[sn], loc)
	}
	var buf []uint64
	for sn := 0; sn < NumShards; sn++ {
		buf = m.ix.ShardLocations(sn, buf[:0])
		want := byShard[sn]
		if len(buf) != len(want) {
			m.t.Fatalf("shard %d: ShardLocations has %d entries, model %d", sn, len(buf), len(want))
		}
		if len(want) > 0 {
			slices.Sort(buf)
			slices.Sort(want)
			require.Equal(m.t, want, buf, "shard %d", sn)
		}
	}
}
