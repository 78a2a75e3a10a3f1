package segment

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode. Decode must never panic, and
// whatever it accepts must be exactly what Encode produces for the decoded
// record at the same generation and offset: no two encodings of one record,
// no unchecked bytes inside a record.
func FuzzDecode(f *testing.F) {
	type seed struct {
		gen uint64
		off int64
		r   Record
	}
	for _, s := range []seed{
		{1, HeaderSize, Record{Kind: KindPut, Seq: 1, Key: []byte("k"), Value: []byte("value")}},
		{2, 4096, Record{Kind: KindPut, Seq: 2, Flags: FlagBatch, Expiry: 1700000000000, Key: []byte("key"), Value: []byte("v")}},
		{3, 64, Record{Kind: KindDelete, Seq: 3, Key: pattern(130, 1)}},
		{4, 128, Record{Kind: KindPut, Seq: 4, Key: []byte("ab"), Value: pattern(200, 2)}},
		{5, 256, Record{Kind: KindBatchCommit, Seq: 5, Value: EncodeCommit(2)}},
		{6, 512, Record{Kind: KindSyncMark, Value: EncodeSyncMark(480)}},
	} {
		buf := make([]byte, Size(len(s.r.Key), len(s.r.Value), s.r.Expiry != 0))
		Encode(buf, s.gen, s.off, &s.r)
		f.Add(buf, s.gen, s.off)
	}
	f.Add([]byte{}, uint64(0), int64(0))
	f.Add(make([]byte, 32), uint64(1), int64(HeaderSize))

	lim := Limits{MaxKey: 1024, MaxValue: 4096}
	f.Fuzz(func(t *testing.T, data []byte, gen uint64, off int64) {
		r, size, err := Decode(data, gen, off, lim)
		if err != nil {
			ce, ok := err.(*CorruptError)
			if !ok || ce.Offset != off {
				t.Fatalf("error %v is not a *CorruptError at offset %d", err, off)
			}
			return
		}
		if size%Align != 0 || size < Size(0, 0, false) {
			t.Fatalf("bad size %d", size)
		}
		if len(r.Key) > lim.MaxKey || len(r.Value) > lim.MaxValue {
			t.Fatalf("lengths %d/%d over the limits", len(r.Key), len(r.Value))
		}
		if want := Size(len(r.Key), len(r.Value), r.Expiry != 0); size != want {
			t.Fatalf("Decode size %d, Size() %d", size, want)
		}
		// Copy the record out of data before re-encoding.
		r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		buf := make([]byte, size)
		if n := Encode(buf, gen, off, &r); n != size {
			t.Fatalf("Encode wrote %d bytes, Decode said %d", n, size)
		}
		n := min(size, len(data)) // padding may be cut off the input
		if !bytes.Equal(buf[:n], data[:n]) {
			t.Fatalf("re-encoding differs:\n input %x\nencode %x", data[:n], buf[:n])
		}
	})
}
