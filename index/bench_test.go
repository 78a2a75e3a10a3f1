package index

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// Benchmarks hash key ids with splitmix64, which costs a few ns, so they
// measure the index rather than a hash function. A location is id+1; the
// match callbacks compare it with the wanted id, the stand-in for reading a
// record and comparing its key.

const benchReserve = 1 << 40 // address space only

func benchPut(b *testing.B, ix *Index, id uint64) {
	loc := id + 1
	if _, _, _, err := ix.Put(splitmix64(id), loc, func(old uint64) (bool, bool) { return old == loc, true }); err != nil {
		b.Fatal(err)
	}
}

func reportMem(b *testing.B, ix *Index) {
	st := ix.Stats()
	if st.Entries > 0 {
		b.ReportMetric(float64(st.ResidentBytes)/float64(st.Entries), "bytes/key")
		b.ReportMetric(st.LoadFactor, "load")
	}
}

// BenchmarkPut inserts b.N new keys into one index.
func BenchmarkPut(b *testing.B) {
	ix, err := New(benchReserve)
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchPut(b, ix, uint64(i))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	reportMem(b, ix)
}

// BenchmarkOverwrite replaces the locations of 1M present keys.
func BenchmarkOverwrite(b *testing.B) {
	const n = 1 << 20
	ix, err := New(benchReserve)
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	for i := uint64(0); i < n; i++ {
		benchPut(b, ix, i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(i) % n
		if _, found, _, _ := ix.Put(splitmix64(id), id+1, func(old uint64) (bool, bool) { return old == id+1, true }); !found {
			b.Fatal("key lost")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkLoad10M builds an index of 10 million keys per iteration and
// reports its memory per key and load factor.
func BenchmarkLoad10M(b *testing.B) {
	const n = 10_000_000
	for i := 0; i < b.N; i++ {
		ix, err := New(benchReserve)
		if err != nil {
			b.Fatal(err)
		}
		for id := uint64(0); id < n; id++ {
			benchPut(b, ix, id)
		}
		if i == b.N-1 {
			b.StopTimer()
			if got := ix.Len(); got != n {
				b.Fatalf("%d entries", got)
			}
			reportMem(b, ix)
			st := ix.Stats()
			b.ReportMetric(float64(st.LiveBytes)/float64(st.Entries), "live-bytes/key")
			b.StartTimer()
		}
		ix.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
}

const lookupKeys = 4_000_000

var (
	lookupOnce sync.Once
	lookupIx   *Index
)

// lookupIndex is shared by the lookup benchmarks (built once per process).
func lookupIndex(b *testing.B) *Index {
	lookupOnce.Do(func() {
		ix, err := New(benchReserve)
		if err != nil {
			b.Fatal(err)
		}
		for id := uint64(0); id < lookupKeys; id++ {
			benchPut(b, ix, id)
		}
		lookupIx = ix
	})
	return lookupIx
}

func benchLookup(b *testing.B, hit bool) {
	ix := lookupIndex(b)
	var seed atomic.Uint64
	var wrong atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := seed.Add(1) << 40
		for pb.Next() {
			r++
			id := splitmix64(r) % lookupKeys
			if !hit {
				id += lookupKeys
			}
			found := ix.Lookup(splitmix64(id), func(loc uint64) bool { return loc == id+1 })
			if found != hit {
				wrong.Add(1)
			}
		}
	})
	b.StopTimer()
	if wrong.Load() != 0 {
		b.Fatalf("%d wrong lookups", wrong.Load())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkLookupHit looks up present keys of a 4M-key index from all Ps.
func BenchmarkLookupHit(b *testing.B) { benchLookup(b, true) }

// BenchmarkLookupMiss looks up absent keys of a 4M-key index from all Ps.
func BenchmarkLookupMiss(b *testing.B) { benchLookup(b, false) }

// BenchmarkAddressSpace inserts N random hashes into an index with the
// engine's default 256 GiB reservation and reports the address space the
// slab allocator carved, the resident and live bytes per key, the block
// classes in use, and how many shards sit above the rung their count alone
// gives (capacity_test.go). Run it once per size:
//
//	go test -run '^$' -bench 'AddressSpace' -benchtime 1x ./index/
func BenchmarkAddressSpace(b *testing.B) {
	for _, n := range []int{10_000_000, 100_000_000} {
		b.Run(fmt.Sprintf("keys=%.0e", float64(n)), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				ix, err := New(defaultReserve)
				if err != nil {
					b.Fatal(err)
				}
				var peakAddr int64
				for id := uint64(0); id < uint64(n); id++ {
					benchPut(b, ix, id)
					if id%(uint64(n)/10) == 0 {
						peakAddr = max(peakAddr, ix.Stats().AddressBytes)
					}
				}
				b.StopTimer()
				st := ix.Stats()
				peakAddr = max(peakAddr, st.AddressBytes)
				above := map[int]int{}
				for sn := range ix.shards {
					if c := shardCap(ix, sn); c > 0 {
						above[rungOf(c)-loadRung(int(ix.shards[sn].count))]++
					}
				}
				b.Logf("%d keys: address %.2f GiB of %.0f GiB reserved, resident %.2f B/key, live %.2f B/key, load %.3f, %d classes in use; shards by rungs above their count's: %v",
					n, float64(peakAddr)/(1<<30), float64(st.ReserveBytes)/(1<<30), float64(st.ResidentBytes)/float64(n),
					float64(st.LiveBytes)/float64(n), st.LoadFactor, st.Classes, above)
				b.ReportMetric(float64(peakAddr)/(1<<30), "address-GiB")
				b.ReportMetric(float64(peakAddr)/float64(n), "address-B/key")
				b.ReportMetric(float64(st.ResidentBytes)/float64(n), "resident-B/key")
				b.ReportMetric(float64(st.Classes), "classes")
				ix.Close()
				b.StartTimer()
			}
		})
	}
}
