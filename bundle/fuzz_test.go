package bundle

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"sync"
	"testing"

	"github.com/marlinkv/marlin/vfs"
)

// Fuzz targets: opening arbitrary bytes, and looking keys up in a valid
// bundle mutated by the fuzzer (optionally with every checksum recomputed,
// so the mutation reaches the checks behind them). Neither may panic,
// hang, or return a value the builder did not store for the key.

// fuzzBase is a small exact bundle and its pairs.
var fuzzBase = sync.OnceValues(func() ([]byte, map[string]string) {
	fs := vfs.NewMem()
	pairs := genPairs(21, 200, 10, 12)
	b, err := NewBuilder(fs, "/b", &BuildOptions{Seed: 7})
	if err != nil {
		panic(err)
	}
	for _, p := range pairs {
		if err := b.Add([]byte(p.k), []byte(p.v)); err != nil {
			panic(err)
		}
	}
	if err := b.Finish(); err != nil {
		panic(err)
	}
	f, _ := fs.Open("/b")
	defer f.Close()
	size, _ := f.Size()
	buf := make([]byte, size)
	_, _ = f.ReadAt(buf, 0)
	return buf, model(pairs)
})

// reseal recomputes the section checksums and the footer's, using the
// footer's layout fields as they are (if they fit the file).
func reseal(b []byte) {
	if len(b) < prefixSize+footerSize {
		return
	}
	foot := b[len(b)-footerSize:]
	le := binary.LittleEndian
	dataLen, entOff, n := le.Uint64(foot[56:]), le.Uint64(foot[64:]), le.Uint64(foot[32:])
	fencesOff := entOff + n*entrySize
	end := uint64(len(b) - footerSize)
	if dataOff+dataLen <= entOff && entOff <= fencesOff && fencesOff <= end && n < 1<<40 {
		le.PutUint32(foot[88:], crc32.Checksum(b[dataOff:dataOff+dataLen], castagnoli))
		le.PutUint32(foot[92:], crc32.Checksum(b[entOff:fencesOff], castagnoli))
		le.PutUint32(foot[96:], crc32.Checksum(b[fencesOff:end], castagnoli))
	}
	le.PutUint32(foot[124:], crc32.Checksum(foot[:124], castagnoli))
}

// exercise opens b and reads through every method; with m, reads of m's
// keys must be right or errors (or absences).
func exercise(t *testing.T, b []byte, m map[string]string, keys ...[]byte) {
	fs := vfs.NewMem()
	f, _ := fs.Create("/b")
	_, _ = f.Write(b)
	_ = f.Close()
	r, err := Open(fs, "/b", nil)
	if err != nil {
		if !isDamage(err) {
			t.Fatalf("Open: unexpected error %v", err)
		}
		return
	}
	defer r.Close()
	check := func(k []byte) {
		v, err := r.Get(k)
		if err != nil && !errors.Is(err, ErrNotFound) && !isDamage(err) {
			t.Fatalf("Get(%q): unexpected error %v", k, err)
		}
		if err == nil && m != nil && !r.Approximate() {
			want, ok := m[string(k)]
			if !ok || want != string(v) {
				t.Fatalf("Get(%q) = %q, stored %q (%v)", k, v, want, ok)
			}
		}
		_, _ = r.Has(k)
		_, _ = r.AppendValue(nil, k)
	}
	for _, k := range keys {
		check(k)
	}
	for k := range m {
		check([]byte(k))
	}
	var pairs [][2][]byte
	ferr := r.ForEach(func(k, v []byte) error {
		if len(pairs) < 1000 {
			pairs = append(pairs, [2][]byte{k, v})
		}
		return nil
	})
	if r.Verify() == nil && ferr == nil && !r.Approximate() {
		// A bundle that verifies reads back what ForEach shows.
		for _, p := range pairs {
			v, err := r.Get(p[0])
			if err != nil || string(v) != string(p[1]) {
				t.Fatalf("verified bundle: Get(%q) = %q, %v; ForEach gave %q", p[0], v, err, p[1])
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	base, _ := fuzzBase()
	f.Add(base)
	f.Add(base[:len(base)/2])
	for _, n := range []int{0, 1, 130} {
		fs := vfs.NewMem()
		b, _ := NewBuilder(fs, "/b", &BuildOptions{Approximate: n == 1, Seed: 3})
		for _, p := range genPairs(uint64(n), n, 6, 6) {
			_ = b.Add([]byte(p.k), []byte(p.v))
		}
		_ = b.Finish()
		fl, _ := fs.Open("/b")
		size, _ := fl.Size()
		buf := make([]byte, size)
		_, _ = fl.ReadAt(buf, 0)
		fl.Close()
		f.Add(buf)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		exercise(t, data, nil, []byte("0/"), []byte(""), []byte("absent"))
	})
}

func FuzzGet(f *testing.F) {
	f.Add([]byte{0}, []byte("1/"))
	f.Add([]byte{1, 0x10, 0x00, 0xff}, []byte("2/"))
	f.Add([]byte{1, 0x20, 0x11, 0x01, 0x30, 0x12, 0x80}, []byte("absent"))
	f.Fuzz(func(t *testing.T, edits, key []byte) {
		base, m := fuzzBase()
		b := append([]byte(nil), base...)
		if len(edits) == 0 {
			return
		}
		// edits: a flags byte (bit 0: reseal), then (offset u16, xor) triples
		// over the file, offsets scaled to its size.
		for i := 1; i+3 <= len(edits); i += 3 {
			off := int(binary.LittleEndian.Uint16(edits[i:])) * len(b) >> 16
			b[off] ^= edits[i+2]
		}
		if edits[0]&1 != 0 {
			reseal(b)
		}
		exercise(t, b, m, key)
	})
}
