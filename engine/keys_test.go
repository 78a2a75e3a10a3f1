package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/keynorm"
	"github.com/marlinkv/marlin/vfs"
)

func normOpts(t *testing.T, fs vfs.FS) *Options {
	t.Helper()
	n, err := keynorm.New(keynorm.Options{Sep: []byte("|"), Dedup: true})
	require.NoError(t, err)
	o := testOpts(fs)
	o.KeyNormalizer = n
	return o
}

func TestKeyNormalizerEveryMethod(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", normOpts(t, fs))
	require.NoError(t, err)
	defer db.Close()

	require.NoError(t, db.Put([]byte("os=android|country=in"), []byte("v1")))
	for _, k := range []string{"country=in|os=android", "os=android|country=in", "country=in||os=android|country=in"} {
		v, err := db.Get([]byte(k))
		require.NoError(t, err, k)
		require.Equal(t, "v1", string(v))
		ok, err := db.Has([]byte(k))
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, db.View([]byte(k), func(v []byte) error {
			require.Equal(t, "v1", string(v))
			return nil
		}))
	}
	_, err = db.Update([]byte("country=in|os=android"), func(v []byte, _ Item, found bool, _ uint64) (Change, error) {
		require.True(t, found)
		return Change{Op: Set, Value: append(v, '+')}, nil
	})
	require.NoError(t, err)
	var b Batch
	b.Put([]byte("b|a"), []byte("batch"))
	b.Delete([]byte("os=android|country=in"))
	require.NoError(t, db.Write(&b))
	require.Equal(t, 2, b.Len(), "Write leaves the caller's batch as it was")
	v, err := db.Get([]byte("a|b"))
	require.NoError(t, err)
	require.Equal(t, "batch", string(v))
	_, err = db.Get([]byte("country=in|os=android"))
	require.ErrorIs(t, err, ErrNotFound)

	// The database holds canonical keys only.
	var keys []string
	require.NoError(t, db.ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil }))
	require.Equal(t, []string{"a|b"}, keys)

	require.NoError(t, db.PutTTL([]byte("z|y"), []byte("t"), 3600e9))
	require.NoError(t, db.Delete([]byte("y|z")))
	_, err = db.Get([]byte("z|y"))
	require.ErrorIs(t, err, ErrNotFound)
}

func TestKeyNormalizerTooLong(t *testing.T) {
	db, err := Open("/db", normOpts(t, vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	var long []byte // 60 distinct parts, 300 bytes
	for i := range 60 {
		long = fmt.Appendf(long, "p%03d|", i)
	}
	err = db.Put(long, []byte("v"))
	require.ErrorIs(t, err, keynorm.ErrTooLong)
	_, err = db.Get(long)
	require.ErrorIs(t, err, keynorm.ErrTooLong)
	// A key that shrinks under the limit once normalized is fine.
	dup := bytes.Repeat([]byte("same|"), 60) // 300 bytes, canonical "same"
	require.NoError(t, db.Put(dup, []byte("d")))
	v, err := db.Get([]byte("same"))
	require.NoError(t, err)
	require.Equal(t, "d", string(v))
}

// TestKeyNormalizerPermutations: any order of a key's parts reads and
// writes one entry.
func TestKeyNormalizerPermutations(t *testing.T) {
	db, err := Open("/db", normOpts(t, vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		n := 1 + rng.IntN(6)
		parts := make([]string, n)
		for j := range parts {
			parts[j] = string(rune('a'+rng.IntN(26))) + "=" + string(rune('a'+rng.IntN(26)))
		}
		val := []byte{byte(i), byte(i >> 8)}
		require.NoError(t, db.Put([]byte(strings.Join(parts, "|")), val))
		for range 5 {
			rng.Shuffle(len(parts), func(a, b int) { parts[a], parts[b] = parts[b], parts[a] })
			got, err := db.Get([]byte(strings.Join(parts, "|")))
			require.NoError(t, err)
			require.Equal(t, val, got)
		}
	}
}
