package segment

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// segBuilder assembles a segment image record by record.
type segBuilder struct {
	gen  uint64
	data []byte
}

func newSeg(gen uint64) *segBuilder {
	return &segBuilder{gen: gen, data: EncodeHeader(Header{ID: 1, Generation: gen, DBTag: 1})}
}

// add appends r and returns its offset.
func (s *segBuilder) add(r Record) int64 {
	off := int64(len(s.data))
	buf := make([]byte, Size(len(r.Key), len(r.Value), r.Expiry != 0))
	Encode(buf, s.gen, off, &r)
	s.data = append(s.data, buf...)
	return off
}

func (s *segBuilder) end() int64 { return int64(len(s.data)) }

func put(seq uint64, k, v string) Record {
	return Record{Kind: KindPut, Seq: seq, Key: []byte(k), Value: []byte(v)}
}

func bput(seq uint64, k, v string) Record {
	r := put(seq, k, v)
	r.Flags = FlagBatch
	return r
}

func commit(seq uint64, n int) Record {
	return Record{Kind: KindBatchCommit, Seq: seq, Value: EncodeCommit(n)}
}

func mark(off int64) Record {
	return Record{Kind: KindSyncMark, Value: EncodeSyncMark(off)}
}

// unit is what a Scan callback saw: the keys and offsets of one unit.
type unit struct {
	keys []string
	offs []int64
}

// scanAll scans data and records the units passed to fn, copying them
// (Scan reuses the entries).
func scanAll(t *testing.T, data []byte, gen uint64) ([]unit, int64, error) {
	t.Helper()
	var units []unit
	end, err := Scan(data, gen, bigLim, func(es []Entry) error {
		var u unit
		for _, e := range es {
			require.NotEqual(t, KindBatchCommit, e.Rec.Kind, "commit records are not passed")
			require.NotEqual(t, KindSyncMark, e.Rec.Kind, "sync marks are not passed")
			require.Equal(t, Size(len(e.Rec.Key), len(e.Rec.Value), e.Rec.Expiry != 0), e.Size)
			u.keys = append(u.keys, string(e.Rec.Key))
			u.offs = append(u.offs, e.Off)
		}
		units = append(units, u)
		return nil
	})
	return units, end, err
}

func TestScanEmpty(t *testing.T) {
	s := newSeg(1)
	units, end, err := scanAll(t, s.data, 1)
	require.NoError(t, err)
	require.Empty(t, units)
	require.Equal(t, int64(HeaderSize), end)
}

func TestScanSingleRecords(t *testing.T) {
	s := newSeg(4)
	a := s.add(put(1, "a", "1"))
	b := s.add(Record{Kind: KindDelete, Seq: 2, Key: []byte("bb")})
	c := s.add(Record{Kind: KindPut, Seq: 3, Expiry: 99, Key: []byte("ccc"), Value: pattern(300, 0)})
	units, end, err := scanAll(t, s.data, 4)
	require.NoError(t, err)
	require.Equal(t, s.end(), end)
	require.Equal(t, []unit{
		{[]string{"a"}, []int64{a}},
		{[]string{"bb"}, []int64{b}},
		{[]string{"ccc"}, []int64{c}},
	}, units)

	// The wrong generation fails on the first record.
	_, end, err = scanAll(t, s.data, 5)
	requireCorruptAt(t, err, a)
	require.Equal(t, int64(HeaderSize), end)
}

func TestScanBatches(t *testing.T) {
	s := newSeg(2)
	a := s.add(put(1, "solo", "x"))
	b1 := s.add(bput(2, "b1", "1"))
	b2 := s.add(bput(3, "b2", "2"))
	b3 := s.add(Record{Kind: KindDelete, Flags: FlagBatch, Seq: 4, Key: []byte("b3")})
	s.add(commit(4, 3))
	c1 := s.add(bput(5, "c1", "1"))
	s.add(commit(5, 1))
	d := s.add(put(6, "after", "y"))
	units, end, err := scanAll(t, s.data, 2)
	require.NoError(t, err)
	require.Equal(t, s.end(), end)
	require.Equal(t, []unit{
		{[]string{"solo"}, []int64{a}},
		{[]string{"b1", "b2", "b3"}, []int64{b1, b2, b3}},
		{[]string{"c1"}, []int64{c1}},
		{[]string{"after"}, []int64{d}},
	}, units)
}

func TestScanBatchWithoutCommit(t *testing.T) {
	s := newSeg(3)
	s.add(put(1, "a", "1"))
	start := s.add(bput(2, "b1", "1"))
	s.add(bput(3, "b2", "2"))
	units, end, err := scanAll(t, s.data, 3)
	requireCorruptAt(t, err, start)
	require.Contains(t, err.Error(), "without its commit")
	require.Equal(t, start, end, "end must be the start of the uncommitted batch")
	require.Equal(t, []unit{{[]string{"a"}, []int64{HeaderSize}}}, units)

	// A sync mark after the batch records does not commit it.
	s.add(mark(start))
	_, end, err = scanAll(t, s.data, 3)
	requireCorruptAt(t, err, start)
	require.Equal(t, start, end)
}

func TestScanRecordInsideUncommittedBatch(t *testing.T) {
	for _, inner := range []Record{
		put(3, "plain", "x"),
		{Kind: KindDelete, Seq: 3, Key: []byte("plain")},
	} {
		s := newSeg(3)
		s.add(put(1, "a", "1"))
		start := s.add(bput(2, "b1", "1"))
		bad := s.add(inner)
		s.add(commit(3, 1))
		units, end, err := scanAll(t, s.data, 3)
		requireCorruptAt(t, err, bad)
		require.Contains(t, err.Error(), "uncommitted batch")
		require.Equal(t, start, end)
		require.Len(t, units, 1)
	}
}

func TestScanSyncMarks(t *testing.T) {
	s := newSeg(6)
	m0 := s.add(mark(HeaderSize))
	a := s.add(put(1, "a", "1"))
	b1 := s.add(bput(2, "b1", "1"))
	s.add(mark(b1)) // a flush in the middle of a batch
	b2 := s.add(bput(3, "b2", "2"))
	s.add(mark(b1))
	s.add(commit(3, 2))
	units, end, err := scanAll(t, s.data, 6)
	require.NoError(t, err)
	require.Equal(t, s.end(), end)
	require.Equal(t, []unit{
		{[]string{"a"}, []int64{a}},
		{[]string{"b1", "b2"}, []int64{b1, b2}},
	}, units)
	require.Equal(t, int64(HeaderSize), m0)

	// A segment ending in a sync mark: the mark is part of the clean end.
	s2 := newSeg(6)
	s2.add(put(1, "a", "1"))
	s2.add(mark(HeaderSize))
	_, end, err = scanAll(t, s2.data, 6)
	require.NoError(t, err)
	require.Equal(t, s2.end(), end)

	// A mark inside a batch that is then cut does not move end past the
	// batch start.
	s3 := newSeg(6)
	s3.add(put(1, "a", "1"))
	start := s3.add(bput(2, "b1", "1"))
	s3.add(mark(start))
	s3.add(bput(3, "b2", "1"))
	_, end, err = scanAll(t, s3.data, 6)
	requireCorruptAt(t, err, start)
	require.Equal(t, start, end)
}

func TestScanCommitMismatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records int
		claim   []byte
	}{
		{"too many", 2, EncodeCommit(3)},
		{"too few", 2, EncodeCommit(1)},
		{"zero", 2, EncodeCommit(0)},
		{"commit without batch", 0, EncodeCommit(0)},
		{"commit of 1 without batch", 0, EncodeCommit(1)},
		{"empty value", 2, nil},
		{"bad varint", 2, []byte{0x80}},
	} {
		s := newSeg(9)
		s.add(put(1, "a", "1"))
		start := s.end()
		for i := range tc.records {
			s.add(bput(uint64(2+i), fmt.Sprint("b", i), "v"))
		}
		c := s.add(Record{Kind: KindBatchCommit, Seq: 9, Value: tc.claim})
		s.add(put(20, "later", "z"))
		units, end, err := scanAll(t, s.data, 9)
		requireCorruptAt(t, err, c, tc.name)
		require.Equal(t, start, end, tc.name)
		require.Len(t, units, 1, tc.name)
	}
}

func TestScanStopsAtDamage(t *testing.T) {
	s := newSeg(1)
	s.add(put(1, "a", "1"))
	b := s.add(put(2, "b", "2"))
	s.add(put(3, "c", "3"))
	good := append([]byte(nil), s.data...)

	s.data[b+13] ^= 0x10 // inside b
	units, end, err := scanAll(t, s.data, 1)
	requireCorruptAt(t, err, b)
	require.Equal(t, b, end)
	require.Len(t, units, 1)

	// Zeros appended after the last record (a pre-allocated or torn tail).
	data := append(append([]byte(nil), good...), make([]byte, 100)...)
	units, end, err = scanAll(t, data, 1)
	requireCorruptAt(t, err, int64(len(good)))
	require.Equal(t, int64(len(good)), end)
	require.Len(t, units, 3)

	// Cut in the middle of the last record.
	last := int64(len(good)) - int64(Size(1, 1, false))
	for cut := last + 1; cut < int64(len(good)); cut++ {
		units, end, err = scanAll(t, good[:cut], 1)
		requireCorruptAt(t, err, last, "cut at %d", cut)
		require.Equal(t, last, end)
		require.Len(t, units, 2)
	}
}

func TestScanPaddingCutOff(t *testing.T) {
	s := newSeg(1)
	s.add(put(1, "a", "1"))
	last := s.add(put(2, "bb", "123")) // 12+1+1+2+3 = 19 -> 24
	full := s.end()
	data := s.data[:last+19]
	units, end, err := scanAll(t, data, 1)
	require.NoError(t, err)
	require.Equal(t, full, end, "end includes the padding that was cut off")
	require.Greater(t, end, int64(len(data)))
	require.Len(t, units, 2)
}

func TestScanPropagatesFnError(t *testing.T) {
	errStop := errors.New("stop")
	s := newSeg(1)
	s.add(put(1, "a", "1"))
	b := s.add(bput(2, "b", "2"))
	s.add(commit(2, 1))
	s.add(put(3, "c", "3"))
	for _, failAt := range []int{0, 1, 2} {
		calls := 0
		end, err := Scan(s.data, 1, bigLim, func([]Entry) error {
			calls++
			if calls-1 == failAt {
				return errStop
			}
			return nil
		})
		require.ErrorIs(t, err, errStop)
		require.NotErrorIs(t, err, ErrCorrupt)
		require.Equal(t, failAt+1, calls, "Scan must stop at the first error")
		switch failAt {
		case 0:
			require.Equal(t, int64(HeaderSize), end)
		case 1:
			require.Equal(t, b, end)
		}
	}
}

func TestScanReusesEntriesButAliasesData(t *testing.T) {
	s := newSeg(1)
	s.add(put(1, "a", "1"))
	s.add(put(2, "b", "2"))
	var kept [][]byte
	_, err := Scan(s.data, 1, bigLim, func(es []Entry) error {
		kept = append(kept, es[0].Rec.Key)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a"), []byte("b")}, kept)
}

func TestSyncedClaim(t *testing.T) {
	s := newSeg(8)
	s.add(put(1, "a", "1"))
	damaged := s.add(put(2, "b", "2"))
	s.add(put(3, "c", "3"))
	const c1, c2, c3 = 1000, 5000, 3000 // claims of marks m1, m2, m3
	m1 := s.add(mark(c1))
	s.add(put(4, "d", "4"))
	m2 := s.add(mark(c2)) // the largest claim
	s.add(put(5, "e", string(pattern(50, 1))))
	m3 := s.add(mark(c3)) // a smaller, later claim

	require.EqualValues(t, c2, SyncedClaim(s.data, 8, bigLim, damaged))
	require.EqualValues(t, c2, SyncedClaim(s.data, 8, bigLim, 0))
	require.EqualValues(t, c2, SyncedClaim(s.data, 8, bigLim, m1))
	// Only marks after from count (a mark at from itself is the damaged
	// record, not a witness).
	require.EqualValues(t, c3, SyncedClaim(s.data, 8, bigLim, m2))
	require.Zero(t, SyncedClaim(s.data, 8, bigLim, m3))
	// Unaligned from.
	require.EqualValues(t, c2, SyncedClaim(s.data, 8, bigLim, m2-3))
	require.EqualValues(t, c3, SyncedClaim(s.data, 8, bigLim, m2+3))
	// The wrong generation: no mark is valid.
	require.Zero(t, SyncedClaim(s.data, 9, bigLim, HeaderSize))

	// Damaged marks are ignored.
	d := append([]byte(nil), s.data...)
	d[m2+5] ^= 0x01 // seq
	require.EqualValues(t, c3, SyncedClaim(d, 8, bigLim, damaged), "m2 broken")
	d[m3] ^= 0x80 // checksum
	require.EqualValues(t, c1, SyncedClaim(d, 8, bigLim, damaged), "m2, m3 broken")
	d[m1+13] ^= 0x02 // the claim itself
	require.Zero(t, SyncedClaim(d, 8, bigLim, damaged), "all broken")

	// A mark cut short at the end of data is ignored.
	require.EqualValues(t, c3, SyncedClaim(s.data, 8, bigLim, m2))
	require.Zero(t, SyncedClaim(s.data[:m3+10], 8, bigLim, m2))
	require.Zero(t, SyncedClaim(s.data[:m3+13], 8, bigLim, m2))

	// A mark moved to another offset is not valid there.
	moved := append([]byte(nil), s.data[:m3]...)
	moved = append(moved, make([]byte, 8)...)
	moved = append(moved, s.data[m3:]...)
	require.Zero(t, SyncedClaim(moved, 8, bigLim, m2))

	// Empty and tiny inputs.
	require.Zero(t, SyncedClaim(nil, 8, bigLim, 0))
	require.Zero(t, SyncedClaim(s.data[:HeaderSize], 8, bigLim, 0))
}
