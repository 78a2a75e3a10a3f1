package bundle

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestApproximateFalsePositives measures the rate at which absent keys
// find a value. With the full 64-bit hash it is n / 2^80 (0 in any
// affordable test); to check that formula, the hash is cut to its top 12
// bits, which makes the expected rate n / 2^(12+16): the hash picks one of
// 2^12 values, then the 16-bit check must match one of the entries with
// that value.
func TestApproximateFalsePositives(t *testing.T) {
	lookups := 4000000
	if testing.Short() {
		lookups = 1000000
	}
	const n, hashBits = 10000, 12
	run := func(t *testing.T) (fp int, info Info) {
		fs := vfs.NewMem()
		pairs := genPairs(17, n, 20, 8)
		build(t, fs, "/b", &BuildOptions{Approximate: true, Seed: 12345}, pairs)
		r := open(t, fs, "/b")
		checkModel(t, r, model(pairs))
		for i := range lookups {
			k := fmt.Appendf(nil, "absent key %d", i)
			v, err := r.Get(k)
			if err == nil {
				fp++
				require.NotNil(t, v)
				ok, err := r.Has(k)
				require.NoError(t, err)
				require.True(t, ok)
				continue
			}
			require.ErrorIs(t, err, ErrNotFound)
		}
		return fp, r.Info()
	}
	t.Run("64-bit", func(t *testing.T) {
		fp, info := run(t)
		require.Zero(t, fp)
		require.InDelta(t, n/math.Exp2(80), info.FalsePositiveRate(), 1e-30)
	})
	t.Run("12-bit", func(t *testing.T) {
		withHash(t, topBits(hashBits))
		fp, _ := run(t)
		want := float64(lookups) * n / math.Exp2(hashBits+16)
		t.Logf("%d false positives in %d lookups of absent keys; expected %.1f", fp, lookups, want)
		require.InDelta(t, want, float64(fp), 5*math.Sqrt(want)+1)
	})
}

// TestApproximateIndistinguishable: keys whose hash and check are both
// equal cannot be told apart; the build refuses them and leaves no file.
func TestApproximateIndistinguishable(t *testing.T) {
	withHash(t, topBits(4)) // 16 hash values: thousands of keys each
	fs := vfs.NewMem()
	b, err := NewBuilder(fs, "/b", &BuildOptions{Approximate: true})
	require.NoError(t, err)
	for _, p := range genPairs(2, 5000, 10, 4) {
		require.NoError(t, b.Add([]byte(p.k), []byte(p.v)))
	}
	err = b.Finish()
	require.ErrorIs(t, err, ErrIndistinguishable)
	require.Empty(t, listAll(t, fs, "/"))

	// The same keys build exact.
	build(t, fs, "/b", nil, genPairs(2, 5000, 10, 4))
}

// TestApproximateBytesPerKey: without keys every entry is fixed-size, so
// long text keys cost nothing: 16 bytes of entry, the value, its 4-byte
// CRC and an eighth of a byte of fences.
func TestApproximateBytesPerKey(t *testing.T) {
	fs := vfs.NewMem()
	var pairs []pair
	for i := range 50000 {
		pairs = append(pairs, pair{fmt.Sprintf("https://example.com/a/rather/long/path/%08d/%s", i, strings.Repeat("x", 40)), "8 bytes!"})
	}
	build(t, fs, "/a", &BuildOptions{Approximate: true}, pairs)
	build(t, fs, "/e", nil, pairs)
	a, e := open(t, fs, "/a").Info(), open(t, fs, "/e").Info()
	t.Logf("keys of %d bytes, 8-byte values: %.2f bytes per key approximate, %.2f exact", len(pairs[0].k), a.BytesPerKey(), e.BytesPerKey())
	require.Less(t, a.BytesPerKey(), 28.3)
	require.Greater(t, a.BytesPerKey(), 28.0)
	require.Greater(t, e.BytesPerKey(), 28.0+float64(len(pairs[0].k)))
	require.Zero(t, a.KeyBytes)
}

// TestApproximateDuplicatesAndRuns: duplicates resolve across runs in
// approximate mode too (the keys are compared while building).
func TestApproximateDuplicatesAndRuns(t *testing.T) {
	fs := vfs.NewMem()
	b, err := NewBuilder(fs, "/b", &BuildOptions{Approximate: true, MemoryLimit: MinMemoryLimit})
	require.NoError(t, err)
	m := addGen(t, b, 40000)
	require.NoError(t, b.Finish())
	st := b.Stats()
	require.Greater(t, st.Runs, 5)
	require.Equal(t, int64(40000-len(m)), st.Duplicates)
	checkModel(t, open(t, fs, "/b"), m)
}
