package bench

import (
	"bytes"
	"compress/flate"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitmixInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, x := range []uint64{0, 1, 2, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		require.Equal(t, x, unsplitmix64(splitmix64(x)))
	}
	for range 100_000 {
		x := r.Uint64()
		require.Equal(t, x, unsplitmix64(splitmix64(x)))
	}
	require.Equal(t, uint64(1), mulInverse(0xBF58476D1CE4E5B9)*0xBF58476D1CE4E5B9)
}

func TestKeysUniqueAndInvertible(t *testing.T) {
	const n = 200_000
	seen := make(map[string]uint64, n)
	var k []byte
	for id := uint64(0); id < n; id++ {
		size := KeySize(id, 8, 40)
		k = Key(k, id, size)
		require.Len(t, k, size)
		prev, dup := seen[string(k[:8])]
		require.False(t, dup, "ids %d and %d share a key prefix", prev, id)
		seen[string(k[:8])] = id
		require.Equal(t, id, IDOfKey(k))
		require.Equal(t, k, Key(nil, id, size), "keys are a function of the id")
	}
	// Consecutive ids share no prefix (the engine's shards see spread keys).
	a, b := Key(nil, 1000, 16), Key(nil, 1001, 16)
	require.NotEqual(t, a[:2], b[:2])
	// Long keys are not mostly zeros.
	long := Key(nil, 7, 64)
	require.Less(t, bytes.Count(long, []byte{0}), 8)
	// Sizes below 8 are raised to 8.
	require.Len(t, Key(nil, 7, 3), 8)
}

func TestKeySize(t *testing.T) {
	require.Equal(t, 16, KeySize(5, 16, 16))
	require.Equal(t, 8, KeySize(5, 2, 0))
	seen := map[int]bool{}
	for id := range uint64(10_000) {
		s := KeySize(id, 10, 20)
		require.GreaterOrEqual(t, s, 10)
		require.LessOrEqual(t, s, 20)
		require.Equal(t, s, KeySize(id, 10, 20))
		seen[s] = true
	}
	require.Len(t, seen, 11, "every size of the range occurs")
}

func TestValueChecks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 1, 5, 8, 9, 15, 16, 17, 23, 24, 25, 31, 100, 1000} {
		for range 200 {
			id, ver := r.Uint64N(1<<40), r.Uint64()
			v := Value(nil, id, ver, size)
			require.Len(t, v, size)
			require.True(t, CheckValue(v, id), "size %d", size)
			require.True(t, bytes.Equal(v, Value(make([]byte, 3), id, ver, size)), "a function of id, version and size")
			if size >= minVersioned {
				require.Equal(t, ver, ValueVersion(v, id))
			}
			if size >= 8 {
				other := id + 1 + r.Uint64N(1000)
				require.False(t, CheckValue(v, other), "size %d: a value of id %d passes for id %d", size, id, other)
				require.False(t, CheckValue(Value(nil, other, ver, size), id))
			}
			if size > 0 {
				// Any damaged byte is caught.
				bad := bytes.Clone(v)
				bad[r.IntN(size)] ^= byte(1 + r.IntN(255))
				require.False(t, CheckValue(bad, id), "size %d: damage not caught", size)
			}
		}
	}
	// Different versions of a long value differ beyond the header.
	a, b := Value(nil, 9, 1, 64), Value(nil, 9, 2, 64)
	require.Equal(t, a[:8], b[:8])
	require.NotEqual(t, a[16:], b[16:])
	// Truncated or extended values fail.
	v := Value(nil, 9, 1, 64)
	require.False(t, CheckValue(append(bytes.Clone(v), 0), 9))
}

func TestValuesIncompressible(t *testing.T) {
	var raw bytes.Buffer
	var v []byte
	for id := range uint64(10_000) {
		v = Value(v, id, id*7, 100)
		raw.Write(v)
	}
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestCompression)
	require.NoError(t, err)
	_, err = w.Write(raw.Bytes())
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.Greater(t, float64(z.Len())/float64(raw.Len()), 0.99, "values compress")
}
