package segment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fuzzSegment builds a small valid segment image: puts, a delete, a batch
// with a sync mark between its records, a TTL put and a trailing mark.
func fuzzSegment(gen uint64) []byte {
	data := EncodeHeader(Header{ID: 3, Generation: gen, DBTag: 1})
	add := func(r Record) {
		b := make([]byte, Size(len(r.Key), len(r.Value), r.Expiry != 0))
		Encode(b, gen, int64(len(data)), &r)
		data = append(data, b...)
	}
	add(Record{Kind: KindPut, Seq: 1, Key: []byte("a"), Value: []byte("alpha")})
	add(Record{Kind: KindPut, Seq: 2, Key: []byte("b"), Value: pattern(70, 3)})
	add(Record{Kind: KindDelete, Seq: 3, Key: []byte("a")})
	add(Record{Kind: KindPut, Flags: FlagBatch, Seq: 4, Key: []byte("c"), Value: []byte("x")})
	add(Record{Kind: KindSyncMark, Value: EncodeSyncMark(int64(len(data)))})
	add(Record{Kind: KindDelete, Flags: FlagBatch, Seq: 5, Key: []byte("b")})
	add(Record{Kind: KindBatchCommit, Seq: 5, Value: EncodeCommit(2)})
	add(Record{Kind: KindPut, Seq: 6, Expiry: 1700000000000, Key: []byte("d"), Value: []byte("ttl")})
	add(Record{Kind: KindSyncMark, Value: EncodeSyncMark(int64(len(data)))})
	return data
}

// FuzzScan feeds arbitrary segment images to ScanFrom, Check and
// SyncedClaim (what recovery and verification run over a segment file).
// None may panic; Scan's units must lie in order inside what it reports as
// the valid end; its errors must be CorruptErrors inside the data; Check's
// problems must be ordered; and an image Scan reads to its end without an
// error must have no problem in Check.
func FuzzScan(f *testing.F) {
	f.Add(fuzzSegment(1), uint64(1), uint16(0))
	f.Add(fuzzSegment(7), uint64(7), uint16(3))
	f.Add(fuzzSegment(2)[:100], uint64(2), uint16(0))
	f.Add(EncodeHeader(Header{ID: 1, Generation: 1, DBTag: 1}), uint64(1), uint16(0))
	f.Add([]byte{}, uint64(0), uint16(0))
	lim := Limits{MaxKey: 1024, MaxValue: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte, gen uint64, skip uint16) {
		from := int64(HeaderSize) + int64(skip)*Align
		last := from
		end, err := ScanFrom(data, gen, lim, from, func(es []Entry) error {
			for _, e := range es {
				if e.Off < last || e.Size <= 0 || e.Size%Align != 0 {
					t.Fatalf("unit entry at %d (size %d) after %d", e.Off, e.Size, last)
				}
				last = e.Off + int64(e.Size)
			}
			return nil
		})
		if end < from || end < last && err == nil {
			t.Fatalf("end %d, from %d, last unit ends at %d", end, from, last)
		}
		if err == nil && from <= int64(len(data)) && end-int64(len(data)) >= Align {
			t.Fatalf("clean scan ends at %d, data is %d bytes", end, len(data))
		}
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Offset < from || ce.Offset > int64(len(data)) {
				t.Fatalf("scan error %v is not a CorruptError inside the data", err)
			}
		}
		probs := Check(data, gen, lim, nil)
		prev := int64(-1)
		for _, p := range probs {
			if p.Offset <= prev || p.Resume <= p.Offset || p.Resume > int64(len(data)) {
				t.Fatalf("problem %+v after offset %d, data %d bytes", p, prev, len(data))
			}
			prev = p.Offset
		}
		if err == nil && from == HeaderSize && len(probs) > 0 {
			t.Fatalf("Scan found nothing wrong, Check found %+v", probs[0])
		}
		if c := SyncedClaim(data, gen, lim, from); c < 0 {
			t.Fatalf("negative claim %d", c)
		}
	})
}

// TestWriteScanCorpus writes FuzzScan's committed seed corpus when
// MARLIN_WRITE_CORPUS=1.
func TestWriteScanCorpus(t *testing.T) {
	if os.Getenv("MARLIN_WRITE_CORPUS") != "1" {
		t.Skip("set MARLIN_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	img := fuzzSegment(5)
	batchCut := bytes.Clone(img)
	batchCut = batchCut[:len(batchCut)-60] // into the batch and the records after it
	for name, b := range map[string][]byte{"valid": img, "cut": batchCut} {
		dir := filepath.Join("testdata", "fuzz", "FuzzScan")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint64(5)\nuint16(0)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
