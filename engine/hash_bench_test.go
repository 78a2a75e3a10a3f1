package engine

import (
	"testing"
	"time"

	"github.com/dchest/siphash"
	"github.com/dgryski/go-farm"
)

// The index hash is SipHash-2-4 keyed with the database's secret key
// (meta.go); it replaced the unkeyed farm.Fingerprint64. These measure
// what the key costs on a thin (16-byte) key.
var hashSink uint64

func BenchmarkHashFarm16(b *testing.B) {
	key := []byte("0123456789abcdef")
	for b.Loop() {
		hashSink += farm.Fingerprint64(key)
	}
}

func BenchmarkHashSipHash16(b *testing.B) {
	key := []byte("0123456789abcdef")
	for b.Loop() {
		hashSink += siphash.Hash(0x0706050403020100, 0x0f0e0d0c0b0a0908, key)
	}
}

func BenchmarkHashKeyed16(b *testing.B) {
	m, err := newMeta(time.Now(), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	h := m.hashFunc()
	key := []byte("0123456789abcdef")
	for b.Loop() {
		hashSink += h(key)
	}
}
