package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// benchN is the pairs per benchmark build (MARLIN_BUNDLE_N overrides).
func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("MARLIN_BUNDLE_N")); err == nil && n > 0 {
		return n
	}
	return 1000000
}

// BenchmarkBuild builds a bundle of thin pairs (16-byte keys, 8-byte
// values) on the OS filesystem; ns/op is per pair.
func BenchmarkBuild(b *testing.B) {
	n := benchN()
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%016x", uint64(i)*0x9e3779b97f4a7c15)
	}
	val := []byte("8 bytes!")
	dir := b.TempDir()
	b.ResetTimer()
	for range b.N {
		bl, err := NewBuilder(nil, filepath.Join(dir, "b"), nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			if err := bl.Add(k, val); err != nil {
				b.Fatal(err)
			}
		}
		if err := bl.Finish(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/pair")
}

// BenchmarkGet looks up present keys of a bundle of thin pairs in the page
// cache, from GOMAXPROCS goroutines; ns/op is per lookup.
func BenchmarkGet(b *testing.B) {
	n := benchN()
	dir := b.TempDir()
	path := filepath.Join(dir, "b")
	bl, err := NewBuilder(nil, path, nil)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%016x", uint64(i)*0x9e3779b97f4a7c15)
		if err := bl.Add(keys[i], []byte("8 bytes!")); err != nil {
			b.Fatal(err)
		}
	}
	if err := bl.Finish(); err != nil {
		b.Fatal(err)
	}
	r, err := Open(nil, path, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i = (i + 7919) % n
			if _, err := r.Get(keys[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
