package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// A damaged bundle gives an error, never a wrong value or a crash. These
// tests damage every field of small bundles in turn and read every key.

// fixture builds a bundle of 300 pairs (two fence buckets) and returns its
// bytes and pairs.
func fixture(t testing.TB, approx bool) ([]byte, map[string]string) {
	t.Helper()
	fs := vfs.NewMem()
	pairs := genPairs(5, 300, 12, 20)
	build(t, fs, "/b", &BuildOptions{Approximate: approx, Seed: 99}, pairs)
	return readFile(t, fs, "/b"), model(pairs)
}

// sealFooter recomputes the footer's CRC, as a forger would.
func sealFooter(b []byte) {
	foot := b[len(b)-footerSize:]
	binary.LittleEndian.PutUint32(foot[124:], crc32.Checksum(foot[:124], castagnoli))
}

// footerOf decodes a valid file's footer.
func footerOf(t testing.TB, b []byte) *footer {
	t.Helper()
	f, err := decodeFooter(b[len(b)-footerSize:], uint64(len(b)))
	require.NoError(t, err)
	return f
}

// readsNoWrongValue opens b and reads every key: each read gives the right
// value or an error (ErrNotFound only if allowMissing). It returns the
// Open error, if any, and whether every read was right.
func readsNoWrongValue(t *testing.T, b []byte, m map[string]string, allowMissing bool, what string) (openErr error, allRight bool) {
	t.Helper()
	fs := vfs.NewMem()
	writeFile(t, fs, "/b", b)
	r, err := Open(fs, "/b", nil)
	if err != nil {
		require.True(t, isDamage(err), "%s: Open: %v", what, err)
		return err, false
	}
	defer r.Close()
	allRight = true
	for k, v := range m {
		got, err := r.Get([]byte(k))
		switch {
		case err == nil:
			require.Equal(t, v, string(got), "%s: key %q: a wrong value", what, k)
		case errors.Is(err, ErrNotFound):
			require.True(t, allowMissing, "%s: key %q reads as absent", what, k)
			allRight = false
		default:
			require.True(t, isDamage(err), "%s: key %q: %v", what, k, err)
			allRight = false
		}
		ok, err := r.Has([]byte(k))
		if err == nil && !ok {
			require.True(t, allowMissing, "%s: Has(%q) is false", what, k)
		}
	}
	ferr := r.ForEach(func(k, v []byte) error {
		if !r.Approximate() {
			want, ok := m[string(k)]
			require.True(t, ok, "%s: ForEach yields key %q that was not added", what, k)
			require.Equal(t, want, string(v), "%s: ForEach: a wrong value for %q", what, k)
		}
		return nil
	})
	if ferr != nil {
		require.True(t, isDamage(ferr), "%s: ForEach: %v", what, ferr)
	}
	verr := r.Verify()
	if verr == nil {
		require.True(t, allRight, "%s: Verify passed over a bundle that reads wrong", what)
	} else {
		require.True(t, isDamage(verr), "%s: Verify: %v", what, verr)
	}
	return nil, allRight
}

// TestCorruptFooterAndPrefix: any byte of the prefix or the footer changed
// fails Open.
func TestCorruptFooterAndPrefix(t *testing.T) {
	for _, approx := range []bool{false, true} {
		b, _ := fixture(t, approx)
		offs := []int{}
		for i := range prefixSize {
			offs = append(offs, i)
		}
		for i := len(b) - footerSize; i < len(b); i++ {
			offs = append(offs, i)
		}
		for _, off := range offs {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				c := append([]byte(nil), b...)
				c[off] ^= x
				fs := vfs.NewMem()
				writeFile(t, fs, "/b", c)
				_, err := Open(fs, "/b", nil)
				require.ErrorIs(t, err, ErrCorrupt, "byte %d ^ %#x", off, x)
			}
		}
	}
}

// TestForgedFooterFields sets each footer field to other values with a
// valid footer CRC: Open fails, or every read is right or an error, and
// Verify finds the damage (except for the build time and a valid value
// format tag, which are free).
func TestForgedFooterFields(t *testing.T) {
	fields := []struct {
		name     string
		off, len int
	}{
		{"mode", 10, 1}, {"hash", 11, 1}, {"fence bits", 12, 1}, {"value format", 13, 1}, {"reserved", 14, 2},
		{"seed", 16, 8}, {"check seed", 24, 8}, {"count", 32, 8}, {"key bytes", 40, 8},
		{"value bytes", 48, 8}, {"data length", 56, 8}, {"entries offset", 64, 8},
		{"file size", 72, 8}, {"build time", 80, 8}, {"data crc", 88, 4},
		{"entries crc", 92, 4}, {"fences crc", 96, 4}, {"reserved", 100, 4},
	}
	for _, approx := range []bool{false, true} {
		b, m := fixture(t, approx)
		foot := len(b) - footerSize
		for _, fd := range fields {
			get := func(c []byte) uint64 {
				var x [8]byte
				copy(x[:], c[foot+fd.off:foot+fd.off+fd.len])
				return binary.LittleEndian.Uint64(x[:])
			}
			orig := get(b)
			vals := []uint64{0, 1, 2, orig + 1, orig - 1, orig ^ 1<<7, orig + 4096, 1<<(8*fd.len) - 1}
			for _, v := range vals {
				v &= 1<<(8*fd.len) - 1
				if v == orig {
					continue
				}
				c := append([]byte(nil), b...)
				var x [8]byte
				binary.LittleEndian.PutUint64(x[:], v)
				copy(c[foot+fd.off:], x[:fd.len])
				sealFooter(c)
				what := fmt.Sprintf("approx=%v %s=%#x (was %#x)", approx, fd.name, v, orig)
				openErr, right := readsNoWrongValue(t, c, m, true, what)
				if fd.name == "value format" && v <= uint64(ValuesItems) {
					// A tag for readers, free like the build time.
					require.NoError(t, openErr, "%s", what)
					continue
				}
				if openErr == nil && fd.name != "build time" {
					// Open accepted the forgery: Verify must not (checked
					// inside readsNoWrongValue when a read went wrong).
					fs := vfs.NewMem()
					writeFile(t, fs, "/b", c)
					r, err := Open(fs, "/b", nil)
					require.NoError(t, err)
					require.Error(t, r.Verify(), "%s: Verify passed (reads right: %v)", what, right)
					r.Close()
				}
			}
		}
	}
}

// TestCorruptEntries damages every field of every entry in turn: Open
// (which does not read the entries) succeeds, reads are right or errors
// (a damaged hash may make its own key absent: nothing else may), Verify
// and an Open with VerifyEntries fail.
func TestCorruptEntries(t *testing.T) {
	for _, approx := range []bool{false, true} {
		b, m := fixture(t, approx)
		f := footerOf(t, b)
		step := 1
		if testing.Short() {
			step = 7
		}
		var entries []int // every step-th entry, and the last
		for i := 0; i < int(f.count); i += step {
			entries = append(entries, i)
		}
		if last := int(f.count) - 1; entries[len(entries)-1] != last {
			entries = append(entries, last)
		}
		for _, i := range entries {
			e := int(f.entriesOff) + i*entrySize
			type mut struct {
				name     string
				off      int
				apply    func(uint64) uint64
				hashOnly bool
			}
			muts := []mut{}
			for _, bit := range []uint{0, 17, 40, 63} {
				muts = append(muts, mut{fmt.Sprintf("hash bit %d", bit), 0, func(x uint64) uint64 { return x ^ 1<<bit }, true})
			}
			offMuts := map[string]func(uint64) uint64{
				"+1": func(x uint64) uint64 { return x + 1 }, "-1": func(x uint64) uint64 { return x - 1 },
				"=0": func(uint64) uint64 { return 0 }, "=max": func(uint64) uint64 { return math.MaxUint64 },
				" bit 10": func(x uint64) uint64 { return x ^ 1<<10 },
			}
			for name, fn := range offMuts {
				muts = append(muts, mut{"offset" + name, 8, func(w uint64) uint64 {
					return w&^offMask | fn(w&offMask)&offMask
				}, false})
				// In approximate mode aux is the check: a damaged check
				// makes its key absent, like a damaged hash.
				muts = append(muts, mut{"aux" + name, 8, func(w uint64) uint64 {
					return w&offMask | uint64(uint16(fn(w>>offBits)))<<offBits
				}, approx})
			}
			for _, mu := range muts {
				c := append([]byte(nil), b...)
				w := binary.LittleEndian.Uint64(c[e+mu.off:])
				nw := mu.apply(w)
				if nw == w {
					continue
				}
				binary.LittleEndian.PutUint64(c[e+mu.off:], nw)
				what := fmt.Sprintf("approx=%v entry %d %s", approx, i, mu.name)
				openErr, _ := readsNoWrongValue(t, c, m, mu.hashOnly, what)
				require.NoError(t, openErr, what)
				fs := vfs.NewMem()
				writeFile(t, fs, "/b", c)
				_, err := Open(fs, "/b", &OpenOptions{VerifyEntries: true})
				require.ErrorIs(t, err, ErrCorrupt, what)
			}
		}
	}
}

// TestCorruptData flips every byte of the data section (keys, values,
// record CRCs) and of the padding: no wrong value, no absent key.
func TestCorruptData(t *testing.T) {
	for _, approx := range []bool{false, true} {
		b, m := fixture(t, approx)
		f := footerOf(t, b)
		step := 1
		if testing.Short() {
			step = 7
		}
		for off := dataOff; off < int(f.entriesOff); off += step {
			c := append([]byte(nil), b...)
			c[off] ^= 0x20
			what := fmt.Sprintf("approx=%v data byte %d", approx, off)
			openErr, _ := readsNoWrongValue(t, c, m, false, what)
			require.NoError(t, openErr)
		}
	}
}

// TestCorruptFences: a damaged fence fails Open (its CRC); a forged one
// (CRCs recomputed) fails Open or reads right or as errors and absences.
func TestCorruptFences(t *testing.T) {
	b, m := fixture(t, false)
	f := footerOf(t, b)
	fo := int(f.fencesOff())
	for i := fo; i < fo+int(fenceSize*f.fenceCount()); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		fs := vfs.NewMem()
		writeFile(t, fs, "/b", c)
		_, err := Open(fs, "/b", nil)
		require.ErrorIs(t, err, ErrCorrupt)

		// The forger fixes the fence CRC too.
		foot := len(c) - footerSize
		binary.LittleEndian.PutUint32(c[foot+96:], crc32.Checksum(c[fo:foot], castagnoli))
		sealFooter(c)
		readsNoWrongValue(t, c, m, true, fmt.Sprintf("forged fence byte %d", i-fo))
	}
}

// TestTruncatedOrExtended: every shorter file, and a longer one, fails
// Open.
func TestTruncatedOrExtended(t *testing.T) {
	b, _ := fixture(t, false)
	fs := vfs.NewMem()
	for n := 0; n < len(b); n += 1 + n/50 {
		writeFile(t, fs, "/b", b[:n])
		_, err := Open(fs, "/b", nil)
		require.ErrorIs(t, err, ErrCorrupt, "truncated to %d", n)
	}
	writeFile(t, fs, "/b", append(append([]byte(nil), b...), 0))
	_, err := Open(fs, "/b", nil)
	require.ErrorIs(t, err, ErrCorrupt)
}

// TestReadFaultIsAnError truncates a bundle underneath its mapping, so
// that reading the lost pages raises SIGBUS: every read returns ErrIO
// instead of killing the process.
func TestReadFaultIsAnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b")
	pairs := genPairs(9, 3000, 16, 3000) // about 4.5 MB of data
	build(t, nil, path, nil, pairs)
	r, err := Open(nil, path, nil)
	require.NoError(t, err)
	defer r.Close()
	require.NoError(t, os.Truncate(path, 4096))
	faults := 0
	for _, p := range pairs {
		v, err := r.Get([]byte(p.k))
		if err != nil {
			require.ErrorIs(t, err, ErrIO)
			require.ErrorContains(t, err, path)
			faults++
			continue
		}
		require.Equal(t, p.v, string(v)) // still in the page cache's first page
	}
	require.Greater(t, faults, len(pairs)/2)
	out, err := r.AppendValue([]byte("dst"), []byte(pairs[len(pairs)-1].k))
	require.ErrorIs(t, err, ErrIO)
	require.Equal(t, "dst", string(out))
	_, err = r.Has([]byte(pairs[len(pairs)-1].k))
	require.ErrorIs(t, err, ErrIO)
	require.ErrorIs(t, r.Verify(), ErrIO)
	require.ErrorIs(t, r.ForEach(func(k, v []byte) error { return nil }), ErrIO)
}
