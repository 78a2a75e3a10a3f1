package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// bigLim accepts everything the format can express.
var bigLim = Limits{MaxKey: MaxKeyLen, MaxValue: maxValue}

// pattern returns n bytes that differ from their neighbours, so that a
// key/value mix-up or an off-by-one shows.
func pattern(n int, salt byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + salt
	}
	return b
}

// encode encodes r for (gen, off) into a buffer pre-filled with garbage, so
// that padding Encode failed to clear would show.
func encode(t testing.TB, gen uint64, off int64, r *Record) []byte {
	t.Helper()
	size := Size(len(r.Key), len(r.Value), r.Expiry != 0)
	buf := bytes.Repeat([]byte{0xA5}, size+16)
	n := Encode(buf, gen, off, r)
	require.Equal(t, size, n, "Encode must return Size()")
	require.Equal(t, bytes.Repeat([]byte{0xA5}, 16), buf[size:], "Encode wrote past Size()")
	return buf[:size]
}

// requireCorruptAt asserts err is a *CorruptError wrapping ErrCorrupt at off.
func requireCorruptAt(t testing.TB, err error, off int64, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.ErrorIs(t, err, ErrCorrupt, msgAndArgs...)
	var ce *CorruptError
	require.ErrorAs(t, err, &ce, msgAndArgs...)
	require.Equal(t, off, ce.Offset, msgAndArgs...)
	require.NotEmpty(t, ce.Reason, msgAndArgs...)
	require.Contains(t, err.Error(), fmt.Sprintf("at offset %d", off), msgAndArgs...)
}

// unpaddedLen is the length of r's encoding without padding.
func unpaddedLen(klen, vlen int, expiry bool) int {
	n := fixedHeader + uvarintLen(uint64(klen)) + uvarintLen(uint64(vlen)) + klen + vlen
	if expiry {
		n += 8
	}
	return n
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	keyLens := []int{1, 2, 7, 8, 127, 128, 129, 16383, 16384, MaxKeyLen - 1, MaxKeyLen}
	valLens := []int{0, 1, 5, 127, 128, 1000, 16384}
	type variant struct {
		kind   Kind
		flags  uint8
		expiry int64
	}
	variants := []variant{
		{KindPut, 0, 0},
		{KindPut, FlagBatch, 0},
		{KindPut, 0, 1700000000123},
		{KindPut, FlagBatch, -1}, // any non-zero expiry is stored as is
		{KindPut, FlagBatch, math.MaxInt64},
		{KindPut, FlagBatch | FlagExpiry, math.MinInt64},
		{KindDelete, 0, 0},
		{KindDelete, FlagBatch, 0},
		{KindDelete, 0, 42},
	}
	gens := []uint64{0, 1, math.MaxUint64}
	offs := []int64{HeaderSize, HeaderSize + 8, MaxSegmentSize - 8}
	i := 0
	for _, v := range variants {
		for _, kl := range keyLens {
			for _, vl := range valLens {
				i++
				gen, off := gens[i%len(gens)], offs[i%len(offs)]
				seq := []uint64{0, 1, 1 << 40, MaxSeq}[i%4]
				r := Record{Kind: v.kind, Flags: v.flags, Seq: seq, Expiry: v.expiry,
					Key: pattern(kl, 1), Value: pattern(vl, 2)}
				name := fmt.Sprintf("kind=%d flags=%d exp=%d klen=%d vlen=%d", v.kind, v.flags, v.expiry, kl, vl)
				buf := encode(t, gen, off, &r)
				size := len(buf)
				require.Zero(t, size%Align, name)
				require.Equal(t, alignUp(unpaddedLen(kl, vl, v.expiry != 0)), size, name)
				for _, b := range buf[unpaddedLen(kl, vl, v.expiry != 0):] {
					require.Zero(t, b, "padding must be zero: %s", name)
				}

				got, n, err := Decode(buf, gen, off, bigLim)
				require.NoError(t, err, name)
				require.Equal(t, size, n, name)
				require.Equal(t, r.Kind, got.Kind, name)
				require.Equal(t, seq, got.Seq, name)
				require.Equal(t, r.Expiry, got.Expiry, name)
				wantFlags := v.flags &^ FlagExpiry
				if v.expiry != 0 {
					wantFlags |= FlagExpiry
				}
				require.Equal(t, wantFlags, got.Flags, name)
				require.Equal(t, r.Key, got.Key, name)
				require.Equal(t, len(r.Value), len(got.Value), name)
				require.True(t, bytes.Equal(r.Value, got.Value), name)
				// Key and value alias the buffer, capped so an append cannot
				// overwrite what follows.
				require.Equal(t, len(got.Key), cap(got.Key), name)
				require.Equal(t, len(got.Value), cap(got.Value), name)

				// Trailing bytes after the record do not matter.
				more := append(append([]byte(nil), buf...), 0xff, 0xee, 0xdd)
				got2, n2, err := Decode(more, gen, off, bigLim)
				require.NoError(t, err, name)
				require.Equal(t, size, n2, name)
				require.Equal(t, r.Key, got2.Key, name)
				got2.Key[0] ^= 0xff
				require.Equal(t, r.Key[0]^0xff, more[unpaddedLen(kl, vl, v.expiry != 0)-vl-kl], "key must alias the buffer: %s", name)
				require.Equal(t, size, n2, name)
			}
		}
	}
}

func TestEncodeControlRecords(t *testing.T) {
	for _, tc := range []struct {
		kind  Kind
		value []byte
		want  uint64
	}{
		{KindBatchCommit, EncodeCommit(1), 1},
		{KindBatchCommit, EncodeCommit(300), 300},
		{KindSyncMark, EncodeSyncMark(HeaderSize), HeaderSize},
		{KindSyncMark, EncodeSyncMark(MaxSegmentSize), MaxSegmentSize},
	} {
		r := Record{Kind: tc.kind, Seq: 9, Value: tc.value}
		buf := encode(t, 3, 64, &r)
		require.Equal(t, Size(0, len(tc.value), false), len(buf))
		got, n, err := Decode(buf, 3, 64, Limits{MaxKey: 0, MaxValue: 16})
		require.NoError(t, err, "kind %d", tc.kind)
		require.Equal(t, len(buf), n)
		require.Equal(t, tc.kind, got.Kind)
		require.Empty(t, got.Key)
		v, k := binary.Uvarint(got.Value)
		require.Positive(t, k)
		require.Equal(t, tc.want, v)
	}
}

func TestEncodeMasksSeqAndKind(t *testing.T) {
	// A sequence number above MaxSeq must not bleed into kind and flags.
	r := Record{Kind: KindDelete, Seq: 1<<63 | 1<<56 | 5, Key: []byte("k")}
	buf := encode(t, 1, HeaderSize, &r)
	got, _, err := Decode(buf, 1, HeaderSize, bigLim)
	require.NoError(t, err)
	require.Equal(t, KindDelete, got.Kind)
	require.Equal(t, uint8(0), got.Flags)
	require.Equal(t, uint64(5), got.Seq)

	// FlagExpiry follows Expiry, not the caller's flags.
	r = Record{Kind: KindPut, Flags: FlagExpiry, Key: []byte("k"), Value: []byte("v")}
	buf = encode(t, 1, HeaderSize, &r)
	require.Equal(t, Size(1, 1, false), len(buf))
	got, _, err = Decode(buf, 1, HeaderSize, bigLim)
	require.NoError(t, err)
	require.Zero(t, got.Flags&FlagExpiry)
	require.Zero(t, got.Expiry)
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		klen, vlen int
		expiry     bool
		want       int
	}{
		{0, 0, false, 16},            // 12 + 1 + 1 = 14 -> 16
		{1, 0, false, 16},            // 15 -> 16
		{2, 0, false, 16},            // 16
		{3, 0, false, 24},            // 17 -> 24
		{1, 1, true, 24},             // 12+1+1+8+1+1 = 24
		{128, 0, false, 144},         // 12+2+1+128 = 143 -> 144
		{MaxKeyLen, 0, false, 65552}, // 12+3+1+65535 = 65551 -> 65552
	} {
		got := Size(tc.klen, tc.vlen, tc.expiry)
		require.Equal(t, tc.want, got, "Size(%d, %d, %v)", tc.klen, tc.vlen, tc.expiry)
		require.Zero(t, got%Align)
		require.LessOrEqual(t, got-tc.klen-tc.vlen, MaxHeader+Align-1)
	}
}

// corruptionSamples are records whose encodings the corruption tests
// damage: every kind, with and without expiry, batch flag and padding.
func corruptionSamples() []Record {
	return []Record{
		{Kind: KindPut, Seq: 1, Key: []byte("k"), Value: []byte("value")},                                 // padded
		{Kind: KindPut, Seq: 77, Flags: FlagBatch, Expiry: 1700000000000, Key: []byte("key"), Value: nil}, // expiry, empty value
		{Kind: KindDelete, Seq: MaxSeq, Key: pattern(130, 3)},                                             // 2-byte klen
		{Kind: KindPut, Seq: 5, Key: []byte("ab"), Value: pattern(200, 9)},                                // 2-byte vlen
		{Kind: KindBatchCommit, Seq: 8, Value: EncodeCommit(3)},
		{Kind: KindSyncMark, Value: EncodeSyncMark(4096)},
		{Kind: KindPut, Seq: 2, Key: []byte("exactly8"), Value: []byte("1234567890123")}, // 12+1+1+8+13 = 35 -> 40
	}
}

func TestDecodeRejectsEveryBitFlip(t *testing.T) {
	const gen, off = 7, 4096
	for i, r := range corruptionSamples() {
		buf := encode(t, gen, off, &r)
		_, _, err := Decode(buf, gen, off, bigLim)
		require.NoError(t, err, "sample %d", i)
		for bit := range len(buf) * 8 {
			b := append([]byte(nil), buf...)
			b[bit/8] ^= 1 << (bit % 8)
			_, _, err := Decode(b, gen, off, bigLim)
			requireCorruptAt(t, err, off, "sample %d: flipping bit %d (byte %d of %d) went undetected", i, bit, bit/8, len(buf))
		}
	}
}

func TestDecodeBoundToGenAndOffset(t *testing.T) {
	for i, r := range corruptionSamples() {
		buf := encode(t, 10, 800, &r)
		for _, tc := range []struct {
			gen uint64
			off int64
		}{
			{10, 808}, {10, 792}, {10, 800 + 1<<20}, {11, 800}, {9, 800}, {10 | 1<<63, 800}, {0, 0},
		} {
			_, _, err := Decode(buf, tc.gen, tc.off, bigLim)
			requireCorruptAt(t, err, tc.off, "sample %d read as gen %d off %d", i, tc.gen, tc.off)
		}
		_, _, err := Decode(buf, 10, 800, bigLim)
		require.NoError(t, err)
	}
}

func TestDecodeTruncated(t *testing.T) {
	const gen, off = 2, 64
	for i, r := range corruptionSamples() {
		buf := encode(t, gen, off, &r)
		end := unpaddedLen(len(r.Key), len(r.Value), r.Expiry != 0)
		for n := range end {
			_, _, err := Decode(buf[:n:n], gen, off, bigLim)
			requireCorruptAt(t, err, off, "sample %d cut to %d of %d bytes", i, n, end)
		}
		// Only padding missing: the record is intact and its size is still
		// the aligned one (Scan relies on that).
		for n := end; n <= len(buf); n++ {
			got, size, err := Decode(buf[:n:n], gen, off, bigLim)
			require.NoError(t, err, "sample %d cut to %d (end %d)", i, n, end)
			require.Equal(t, len(buf), size)
			require.True(t, bytes.Equal(r.Key, got.Key))
		}
	}
}

func TestDecodeZeroFilled(t *testing.T) {
	for _, n := range []int{0, 1, 13, 14, 15, 16, 32, 64, 4096} {
		_, _, err := Decode(make([]byte, n), 1, 40, bigLim)
		requireCorruptAt(t, err, 40, "%d zero bytes", n)
		_, _, err = Decode(make([]byte, n), 0, 0, bigLim)
		requireCorruptAt(t, err, 0, "%d zero bytes, gen 0 off 0", n)
	}
}

// rawHeader builds a record header by hand, with a correct checksum over
// whatever of the record buf holds, for lengths Encode cannot produce.
func rawHeader(gen uint64, off int64, kind Kind, flags uint8, klen, vlen uint64, total int) []byte {
	buf := make([]byte, total)
	binary.LittleEndian.PutUint64(buf[4:], 1|uint64(kind)<<56|uint64(flags)<<60)
	p := fixedHeader
	p += binary.PutUvarint(buf[p:], klen)
	binary.PutUvarint(buf[p:], vlen)
	binary.LittleEndian.PutUint32(buf, crc32.Update(seed(gen, off), castagnoli, buf[4:]))
	return buf
}

func TestDecodeLengthLimits(t *testing.T) {
	const gen, off = 5, 128
	r := Record{Kind: KindPut, Seq: 1, Key: pattern(100, 0), Value: pattern(1000, 1)}
	buf := encode(t, gen, off, &r)
	for _, tc := range []struct {
		lim Limits
		ok  bool
	}{
		{Limits{MaxKey: 100, MaxValue: 1000}, true},
		{Limits{MaxKey: 99, MaxValue: 1000}, false},
		{Limits{MaxKey: 100, MaxValue: 999}, false},
		{Limits{MaxKey: 0, MaxValue: 0}, false},
		{Limits{MaxKey: -1, MaxValue: -1}, false},
	} {
		_, _, err := Decode(buf, gen, off, tc.lim)
		if tc.ok {
			require.NoError(t, err, "%+v", tc.lim)
		} else {
			requireCorruptAt(t, err, off, "%+v", tc.lim)
		}
	}

	// Lengths that the limits or the format forbid, or that overrun the
	// buffer, in a small buffer. None may panic or allocate their size.
	huge := []struct {
		name       string
		flags      uint8
		klen, vlen uint64
		lim        Limits
	}{
		{"key over format max", 0, MaxKeyLen + 1, 0, Limits{MaxKey: math.MaxInt, MaxValue: math.MaxInt}},
		{"key over limit", 0, 251, 0, Limits{MaxKey: 250, MaxValue: 1 << 20}},
		{"value over format max", 0, 1, maxValue + 1, Limits{MaxKey: math.MaxInt, MaxValue: math.MaxInt}},
		{"value of 2^63", 0, 1, 1 << 63, Limits{MaxKey: math.MaxInt, MaxValue: math.MaxInt}},
		{"value of 2^64-1", 0, 1, math.MaxUint64, Limits{MaxKey: math.MaxInt, MaxValue: math.MaxInt}},
		{"value over limit", 0, 1, 1<<20 + 1, Limits{MaxKey: 250, MaxValue: 1 << 20}},
		{"value of 4 GiB overruns", 0, 1, maxValue, bigLim},
		{"key of 64 KiB overruns", 0, MaxKeyLen, 0, bigLim},
		{"expiry overruns", FlagExpiry, 1, 0, bigLim},
	}
	for _, tc := range huge {
		b := rawHeader(gen, off, KindPut, tc.flags, tc.klen, tc.vlen, 24)
		_, _, err := Decode(b, gen, off, tc.lim)
		requireCorruptAt(t, err, off, tc.name)
		bytesPerCall := allocBytes(100, func() { _, _, _ = Decode(b, gen, off, tc.lim) })
		require.Less(t, bytesPerCall, 512.0, "%s: Decode allocated %v bytes per call", tc.name, bytesPerCall)
	}

	// An unterminated length varint.
	b := rawHeader(gen, off, KindPut, 0, 1, 1, 32)
	for i := fixedHeader; i < len(b); i++ {
		b[i] = 0xff
	}
	_, _, err := Decode(b, gen, off, bigLim)
	requireCorruptAt(t, err, off, "unterminated varint")
}

// allocBytes returns the bytes f allocates per call, averaged over runs.
func allocBytes(runs int, f func()) float64 {
	f()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	const gen, off = 5, 128
	for i, r := range corruptionSamples() {
		buf := encode(t, gen, off, &r)
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, err := Decode(buf, gen, off, bigLim); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs, "sample %d: successful Decode allocated", i)
	}
	// The error path allocates only the error itself: a bounded amount,
	// however large the lengths a damaged header claims (checked per case in
	// TestDecodeLengthLimits).
	b := rawHeader(gen, off, KindPut, 0, 1, maxValue, 64)
	allocs := testing.AllocsPerRun(100, func() { _, _, _ = Decode(b, gen, off, bigLim) })
	require.LessOrEqual(t, allocs, 4.0, "a rejected record should cost only its error value")
}

func TestDecodeBadKind(t *testing.T) {
	for _, kind := range []Kind{0, 5, 6, 15} {
		b := rawHeader(1, 32, kind, 0, 1, 1, 16)
		_, _, err := Decode(b, 1, 32, bigLim)
		requireCorruptAt(t, err, 32, "kind %d", kind)
		require.Contains(t, err.Error(), "kind")
	}
	// The same bytes with a valid kind decode, so the kind check is what
	// failed above.
	b := rawHeader(1, 32, KindPut, 0, 1, 1, 16)
	_, _, err := Decode(b, 1, 32, bigLim)
	require.NoError(t, err)
}

func TestCorruptErrorWithFile(t *testing.T) {
	err := corruptf(48, "bad %s", "thing")
	e2 := WithFile(err, "/db/0000000000000001.seg")
	require.ErrorIs(t, e2, ErrCorrupt)
	require.EqualError(t, e2, "marlin: corrupt data in /db/0000000000000001.seg at offset 48: bad thing")
	// The original is not modified, and a file already set is kept.
	require.Empty(t, err.(*CorruptError).File)
	require.Equal(t, e2, WithFile(e2, "/other"))
	// Other errors pass through untouched; wrapped corrupt errors get it.
	plain := errors.New("x")
	require.Same(t, plain, WithFile(plain, "f"))
	require.Nil(t, WithFile(nil, "f"))
	wrapped := fmt.Errorf("ctx: %w", corruptf(8, "r"))
	var ce *CorruptError
	require.ErrorAs(t, WithFile(wrapped, "f"), &ce)
	require.Equal(t, "f", ce.File)
	require.Equal(t, int64(8), ce.Offset)
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{ID: 0, Generation: 0, DBTag: 1},
		{ID: 1, Generation: 1, DBTag: 0xdeadbeef},
		{ID: MaxSegments - 1, Generation: math.MaxUint64, DBTag: math.MaxUint32},
		{ID: 513, Generation: 1 << 40, DBTag: 7},
		{ID: 1024, Generation: 5, DBTag: 9}, // past the old limit of 1024 ids
		{ID: 5000, Generation: 6, DBTag: 9},
	} {
		b := EncodeHeader(h)
		require.Len(t, b, HeaderSize)
		require.Equal(t, "MARLINSG", string(b[:8]))
		require.Equal(t, uint16(2), binary.LittleEndian.Uint16(b[8:]), "version")
		require.Equal(t, h.DBTag, binary.LittleEndian.Uint32(b[12:]), "db tag")
		require.Equal(t, make([]byte, 4), b[28:32], "reserved")
		got, err := DecodeHeader(b)
		require.NoError(t, err)
		require.Equal(t, h, got)
		// Followed by records: only the first HeaderSize bytes count.
		got, err = DecodeHeader(append(b, 1, 2, 3))
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
}

func TestHeaderRejects(t *testing.T) {
	good := EncodeHeader(Header{ID: 3, Generation: 99, DBTag: 0x01020304})
	withCRC := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castagnoli))
		return b
	}
	clone := func() []byte { return append([]byte(nil), good...) }

	cases := map[string][]byte{
		"empty":       nil,
		"short":       good[:HeaderSize-1],
		"zeros":       make([]byte, HeaderSize),
		"bad magic":   withCRC(append([]byte("MARLINSX"), good[8:]...)),
		"bad version": withCRC(func() []byte { b := clone(); binary.LittleEndian.PutUint16(b[8:], FormatVersion+1); return b }()),
		"version 0":   withCRC(func() []byte { b := clone(); binary.LittleEndian.PutUint16(b[8:], 0); return b }()),
		"version 1":   withCRC(func() []byte { b := clone(); binary.LittleEndian.PutUint16(b[8:], 1); return b }()),
		"id too big":  EncodeHeader(Header{ID: MaxSegments, Generation: 99, DBTag: 1}),
		"id 65535":    EncodeHeader(Header{ID: 65535, Generation: 99, DBTag: 1}),
		"no db tag":   EncodeHeader(Header{ID: 3, Generation: 99}),
		"bad crc":     func() []byte { b := clone(); b[24] ^= 1; return b }(),
	}
	for name, b := range cases {
		_, err := DecodeHeader(b)
		requireCorruptAt(t, err, 0, name)
	}
	_, err := DecodeHeader(cases["bad magic"])
	require.Contains(t, err.Error(), "magic")
	_, err = DecodeHeader(cases["bad version"])
	require.Contains(t, err.Error(), "version")
	_, err = DecodeHeader(cases["bad crc"])
	require.Contains(t, err.Error(), "checksum")
	_, err = DecodeHeader(cases["version 1"])
	require.Contains(t, err.Error(), "older Marlin format version 1")
	_, err = DecodeHeader(cases["no db tag"])
	require.Contains(t, err.Error(), "database tag")

	// Every bit of the checksummed part and of the checksum itself.
	for bit := range 28 * 8 {
		b := clone()
		b[bit/8] ^= 1 << (bit % 8)
		_, err := DecodeHeader(b)
		requireCorruptAt(t, err, 0, "header bit %d", bit)
	}
}

func TestLoc(t *testing.T) {
	require.Equal(t, 37, OffsetBits+IDBits, "the index stores 37-bit locations")
	require.Equal(t, 8192, MaxSegments)
	require.Equal(t, int64(1)<<40, int64(MaxSegments)*MaxSegmentSize, "1 TiB of addressable log")
	require.LessOrEqual(t, MaxSegments-1, math.MaxUint16, "ids fit the header's uint16")
	for _, tc := range []struct {
		id  uint16
		off int64
	}{
		{0, 0},
		{0, HeaderSize},
		{1, 8},
		{0, MaxSegmentSize - 8},
		{1023, MaxSegmentSize - 8}, // the old limit of 1024 ids
		{1024, 0},
		{1024, HeaderSize},
		{4095, 1 << 26},
		{4096, 8},
		{MaxSegments - 1, 0},
		{MaxSegments - 1, HeaderSize},
		{MaxSegments - 1, MaxSegmentSize - 8},
		{512, 1 << 20},
	} {
		loc := Loc(tc.id, tc.off)
		require.Less(t, loc, uint64(1)<<37, "%+v", tc)
		id, off := SplitLoc(loc)
		require.Equal(t, tc.id, id, "%+v", tc)
		require.Equal(t, tc.off, off, "%+v", tc)
	}
	require.Equal(t, uint64(1)<<37-1, Loc(MaxSegments-1, MaxSegmentSize-8))
	require.Zero(t, Loc(0, 0))
	// Neighbours at the extremes stay distinct.
	require.NotEqual(t, Loc(MaxSegments-1, 0), Loc(MaxSegments-2, MaxSegmentSize-8))
	require.Equal(t, Loc(MaxSegments-2, MaxSegmentSize-8)+1, Loc(MaxSegments-1, 0))
	require.Equal(t, Loc(1023, MaxSegmentSize-8)+1, Loc(1024, 0))
}

func TestFileName(t *testing.T) {
	require.Equal(t, "0000000000000001.seg", FileName(1))
	require.Equal(t, "0000000000000000.seg", FileName(0))
	for _, g := range []uint64{0, 1, 42, 1234567890123456, 9999999999999999} {
		name := FileName(g)
		require.Len(t, name, 20)
		got, ok := ParseFileName(name)
		require.True(t, ok, name)
		require.Equal(t, g, got)
	}
	// Names sort like generations (recovery and List rely on it).
	require.Less(t, FileName(9), FileName(10))
	require.Less(t, FileName(999), FileName(1000))

	for _, bad := range []string{
		"", ".seg", "LOCK", "1.seg",
		"000000000000001.seg",   // 15 digits
		"00000000000000001.seg", // 17 digits
		"0000000000000001.sg",
		"0000000000000001.seg.tmp",
		"0000000000000001",
		"000000000000000a.seg",
		"+000000000000001.seg",
		"-000000000000001.seg",
		" 000000000000001.seg",
	} {
		_, ok := ParseFileName(bad)
		require.False(t, ok, "%q", bad)
	}
}

func TestPeekSize(t *testing.T) {
	lim := Limits{MaxKey: 1 << 10, MaxValue: 1 << 20}
	for _, c := range []struct {
		klen, vlen int
		exp        bool
	}{{1, 0, false}, {16, 16, false}, {16, 300, true}, {1000, 1 << 20, false}} {
		r := Record{Kind: KindPut, Seq: 7, Key: make([]byte, c.klen), Value: make([]byte, c.vlen)}
		if c.exp {
			r.Expiry = 12345
		}
		want := Size(c.klen, c.vlen, c.exp)
		buf := make([]byte, want)
		Encode(buf, 3, 64, &r)
		got, ok := PeekSize(buf[:min(MaxHeader, len(buf))], lim)
		if !ok || got != want {
			t.Errorf("PeekSize(%+v) = %d, %v; want %d", c, got, ok, want)
		}
		if _, ok := PeekSize(buf[:fixedHeader+1], lim); ok {
			t.Errorf("PeekSize of a cut header said ok")
		}
		small := Limits{MaxKey: c.klen, MaxValue: c.vlen - 1}
		if _, ok := PeekSize(buf, small); ok && c.vlen > 0 {
			t.Errorf("PeekSize accepted a value over the limit")
		}
	}
}
