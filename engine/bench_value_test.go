package engine

import (
	"testing"
)

// BenchmarkPutBatch1000Value100 is BenchmarkPutBatch1000 with 100-byte
// values.
func BenchmarkPutBatch1000Value100(b *testing.B) {
	db := openBench(b, nil)
	var batch Batch
	k := make([]byte, 16)
	v := make([]byte, 100)
	b.SetBytes(116)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch.Put(benchKey(k, uint64(i)), v)
		if batch.Len() == 1000 {
			if err := db.Write(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}
