package bundle

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestRoundTripSizes builds bundles of many sizes, in both modes, and
// reads every pair back.
func TestRoundTripSizes(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 63, 64, 127, 128, 129, 255, 256, 1000, 4097, 20000}
	if !testing.Short() {
		sizes = append(sizes, 150000)
	}
	for _, approx := range []bool{false, true} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("n=%d/approx=%v", n, approx), func(t *testing.T) {
				fs := vfs.NewMem()
				pairs := genPairs(uint64(n), n, 40, 60)
				st := build(t, fs, "/b", &BuildOptions{Approximate: approx}, pairs)
				require.Equal(t, int64(n), st.Entries)
				require.Zero(t, st.Runs)
				r := open(t, fs, "/b")
				checkModel(t, r, model(pairs))
				info := r.Info()
				require.Equal(t, int64(n), info.Count)
				require.Equal(t, approx, info.Approximate)
				require.Equal(t, int(fenceBits(uint64(n))), info.FenceBits)
				size := int64(len(readFile(t, fs, "/b")))
				require.Equal(t, size, info.FileSize)
				require.Equal(t, info.FileSize, alignedSize(info))
				if n >= 2*bucketMin {
					// 64 to 128 entries per bucket on average.
					per := float64(n) / float64(int(1)<<info.FenceBits)
					require.True(t, per >= 64 && per < 128, "%.1f entries per bucket", per)
				}
			})
		}
	}
}

// alignedSize recomputes the file size from the section sizes.
func alignedSize(i Info) int64 {
	return int64(alignUp(uint64(prefixSize+i.DataBytes), entryAlign)) + i.EntryBytes + i.FenceBytes + footerSize
}

// TestEmptyKeyValue: an empty key and empty values are pairs like others.
func TestEmptyKeyValue(t *testing.T) {
	fs := vfs.NewMem()
	pairs := []pair{{"", "empty key"}, {"k", ""}, {"", ""}}
	build(t, fs, "/b", nil, pairs)
	r := open(t, fs, "/b")
	checkModel(t, r, map[string]string{"": "", "k": ""})
}

// TestHugeValues: values of several MiB, beside small ones, with a memory
// limit smaller than one of them (each goes to a run of its own).
func TestHugeValues(t *testing.T) {
	fs := vfs.NewMem()
	big := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	pairs := []pair{{"a", "small"}, {"huge1", big(3<<20, 'x')}, {"b", "small too"},
		{"huge2", big(5<<20+7, 'y')}, {"c", ""}, {"huge1", big(2<<20, 'z')}}
	st := build(t, fs, "/b", &BuildOptions{MemoryLimit: 1 << 20}, pairs)
	require.Greater(t, st.Runs, 2)
	require.Equal(t, int64(1), st.Duplicates)
	r := open(t, fs, "/b")
	checkModel(t, r, model(pairs))
}

// TestEqualHashes forces true hash collisions (only the top 10 bits of the
// hash kept: about 20 keys per hash value) in exact mode: every key is
// still found, absent keys with a colliding hash are absent, and
// duplicates among colliding keys resolve to the last value.
func TestEqualHashes(t *testing.T) {
	withHash(t, topBits(10))
	for _, limit := range []int64{0, MinMemoryLimit} {
		fs := vfs.NewMem()
		pairs := genPairs(7, 20000, 20, 30)
		pairs = append(pairs, pairs[5:50]...) // duplicates: same values
		pairs = append(pairs, pair{pairs[7].k, "replaced"}, pair{pairs[9].k, "replaced too"})
		st := build(t, fs, "/b", &BuildOptions{MemoryLimit: limit}, pairs)
		require.Equal(t, int64(47), st.Duplicates)
		if limit != 0 {
			require.Greater(t, st.Runs, 1)
		}
		r := open(t, fs, "/b")
		checkModel(t, r, model(pairs))
		// Every hash value is shared by about 20 keys, in the order they
		// were added; a lookup scans the group up to its key, so the keys
		// added last cost the most.
		total := 0
		for _, p := range pairs[19000:20000] {
			n, err := r.Probes([]byte(p.k))
			require.NoError(t, err)
			total += n
		}
		require.Greater(t, total/1000, 15)
	}
}

// TestDuplicates: the last value added wins, across the memory buffer and
// runs; Strict refuses a duplicate and leaves no file.
func TestDuplicates(t *testing.T) {
	for _, limit := range []int64{0, MinMemoryLimit} {
		fs := vfs.NewMem()
		var pairs []pair
		for round := range 4 {
			for i := range 3000 {
				pairs = append(pairs, pair{fmt.Sprintf("key-%05d", i), fmt.Sprintf("round %d of %d %s", round, i, strings.Repeat("v", i%100))})
			}
		}
		st := build(t, fs, "/b", &BuildOptions{MemoryLimit: limit}, pairs)
		require.Equal(t, int64(9000), st.Duplicates)
		require.Equal(t, int64(3000), st.Entries)
		r := open(t, fs, "/b")
		checkModel(t, r, model(pairs))

		b, err := NewBuilder(fs, "/strict", &BuildOptions{Strict: true, MemoryLimit: limit})
		require.NoError(t, err)
		for _, p := range pairs {
			require.NoError(t, b.Add([]byte(p.k), []byte(p.v)))
		}
		err = b.Finish()
		require.ErrorIs(t, err, ErrDuplicateKey)
		require.ErrorContains(t, err, "key-")
		_, err = fs.Stat("/strict")
		require.Error(t, err)
		require.Equal(t, []string{"b"}, listAll(t, fs, "/"))
	}
}

// listAll lists dir on fs.
func listAll(t testing.TB, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	require.NoError(t, err)
	return names
}

// TestKeyTooLong: a key over MaxKeyLen is refused and the build goes on;
// the longest key works.
func TestKeyTooLong(t *testing.T) {
	fs := vfs.NewMem()
	b, err := NewBuilder(fs, "/b", nil)
	require.NoError(t, err)
	require.ErrorIs(t, b.Add(make([]byte, MaxKeyLen+1), nil), ErrTooLarge)
	long := bytes.Repeat([]byte("k"), MaxKeyLen)
	require.NoError(t, b.Add(long, []byte("v")))
	require.NoError(t, b.Finish())
	r := open(t, fs, "/b")
	checkModel(t, r, map[string]string{string(long): "v"})
}

// TestBuilderMisuse: Add or Finish after Finish, Abort after Finish.
func TestBuilderMisuse(t *testing.T) {
	fs := vfs.NewMem()
	b, err := NewBuilder(fs, "/b", nil)
	require.NoError(t, err)
	require.NoError(t, b.Add([]byte("k"), []byte("v")))
	require.NoError(t, b.Finish())
	require.ErrorIs(t, b.Add([]byte("k"), nil), ErrClosed)
	require.ErrorIs(t, b.Finish(), ErrClosed)
	require.NoError(t, b.Abort())
	open(t, fs, "/b") // Abort after Finish keeps the bundle

	_, err = NewBuilder(fs, "/missing/b", nil)
	require.Error(t, err)
	_, err = NewBuilder(fs, "/c", &BuildOptions{MemoryLimit: 1000})
	require.Error(t, err)

	r, err := Open(fs, "/b", nil)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.ErrorIs(t, r.Close(), ErrClosed)
	_, err = r.Get([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	_, err = r.Has([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, r.Verify(), ErrClosed)
	require.ErrorIs(t, r.ForEach(func(k, v []byte) error { return nil }), ErrClosed)
}

// TestSeedAndFormat: a given seed is stored; the same pairs and seed give
// the same bytes but for the build time; the hash is FarmHash64 with the
// seed (pinned: files depend on it).
func TestSeedAndFormat(t *testing.T) {
	require.Equal(t, uint64(0xe6b4c3728e67cfa6), hashKey([]byte("marlin"), 42), "the persisted hash function changed")
	fs := vfs.NewMem()
	pairs := genPairs(3, 500, 10, 10)
	build(t, fs, "/a", &BuildOptions{Seed: 42}, pairs)
	build(t, fs, "/b", &BuildOptions{Seed: 42}, pairs)
	a, b := readFile(t, fs, "/a"), readFile(t, fs, "/b")
	require.Equal(t, len(a), len(b))
	// The build time is footer bytes 80..88 and changes the footer CRC.
	foot := len(a) - footerSize
	copy(b[foot+80:foot+88], a[foot+80:foot+88])
	copy(b[foot+124:], a[foot+124:])
	require.True(t, bytes.Equal(a, b))
	require.Equal(t, uint64(42), open(t, fs, "/a").Info().Seed)
	require.Equal(t, "MARLNBDL\x01\x00\x00\x00\x00\x00\x00\x00", string(a[:16]))
}
