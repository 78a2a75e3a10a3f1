package keynorm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNormalize(t *testing.T) {
	pipe := Options{Sep: []byte("|")}
	cases := []struct {
		name string
		o    Options
		in   string
		want string
		err  error
	}{
		{"sorted", pipe, "country=in|os=android|model=x", "country=in|model=x|os=android", nil},
		{"already", pipe, "a|b|c", "a|b|c", nil},
		{"one part", pipe, "solo", "solo", nil},
		{"empty key", pipe, "", "", nil},
		{"empty parts dropped", pipe, "b||a|", "a|b", nil},
		{"only separators", pipe, "|||", "", nil},
		{"empty parts kept", Options{Sep: []byte("|"), KeepEmpty: true}, "b||a", "|a|b", nil},
		{"duplicates kept", pipe, "b|a|b", "a|b|b", nil},
		{"duplicates dropped", Options{Sep: []byte("|"), Dedup: true}, "b|a|b|a", "a|b", nil},
		{"byte order", pipe, "b|B|a|A|é|0", "0|A|B|a|b|é", nil},
		{"first in place", Options{Sep: []byte("|"), First: []string{"tenant", "v"}}, "x=1|v=2|a=3|tenant=9", "tenant=9|v=2|a=3|x=1", nil},
		{"first by name only", Options{Sep: []byte("|"), First: []string{"v"}}, "vx=1|v|v=2", "v|v=2|vx=1", nil},
		{"multi-byte separator", Options{Sep: []byte("::")}, "b::a:x::c", "a:x::b::c", nil},
		{"escaped separator", Options{Sep: []byte("|"), Escape: '\\'}, `z|a\|b|m`, `a\|b|m|z`, nil},
		{"needless escape dropped", Options{Sep: []byte("|"), Escape: '\\'}, `\z|\a`, `a|z`, nil},
		{"escaped escape", Options{Sep: []byte("|"), Escape: '\\'}, `b\\|a`, `a|b\\`, nil},
		{"escape at the end", Options{Sep: []byte("|"), Escape: '\\'}, `a|b\`, "", ErrBadEscape},
		{"separator prefix at a part's end", Options{Sep: []byte("||"), Escape: '\\'}, `b||a\|`, `a\|||b`, nil},
		{"250 bytes", pipe, strings.Repeat("x", 124) + "|" + strings.Repeat("y", 125), strings.Repeat("x", 124) + "|" + strings.Repeat("y", 125), nil},
		{"251 bytes", pipe, strings.Repeat("y", 125) + "|" + strings.Repeat("x", 125), "", ErrTooLong},
		{"long input, short output", Options{Sep: []byte("|"), Dedup: true}, strings.Repeat("ab|", 1000), "ab", nil},
		{"own limit", Options{Sep: []byte("|"), MaxLen: 3}, "b|a", "a|b", nil},
		{"over its own limit", Options{Sep: []byte("|"), MaxLen: 2}, "b|a", "", ErrTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := New(c.o)
			require.NoError(t, err)
			got, err := n.Append([]byte("prefix:"), []byte(c.in))
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				require.Equal(t, "prefix:", string(got), "dst is returned unchanged")
				return
			}
			require.NoError(t, err)
			require.Equal(t, "prefix:"+c.want, string(got))
			again, err := n.Normalize([]byte(c.want))
			require.NoError(t, err)
			require.Equal(t, c.want, string(again), "the canonical form is its own")
		})
	}
}

func TestNewRefuses(t *testing.T) {
	for _, o := range []Options{{}, {Sep: []byte("|\\"), Escape: '\\'}, {Sep: []byte("|"), MaxLen: -1}} {
		_, err := New(o)
		require.Error(t, err, "%+v", o)
	}
}

// TestPermutations: any order of a key's parts, any spelling of them
// (needless escapes), gives one canonical key; that key is its own
// canonical form and decodes to the parts, sorted.
func TestPermutations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, o := range []Options{
		{Sep: []byte("|"), Escape: '\\'},
		{Sep: []byte("||"), Escape: '\\', Dedup: true},
		{Sep: []byte("|:"), Escape: '%', KeepEmpty: true, MaxLen: 4096},
		{Sep: []byte(","), Escape: '\\', First: []string{"k"}, MaxLen: 4096},
	} {
		n, err := New(o)
		require.NoError(t, err)
		alphabet := []byte{'a', 'b', 'k', '=', o.Escape, o.Sep[0], o.Sep[len(o.Sep)-1]}
		for range 2000 {
			parts := make([][]byte, rng.IntN(6))
			for i := range parts {
				p := make([]byte, rng.IntN(5))
				for j := range p {
					p[j] = alphabet[rng.IntN(len(alphabet))]
				}
				parts[i] = p
			}
			want, werr := n.Normalize(join(o, parts, rng))
			for range 5 {
				rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
				got, err := n.Normalize(join(o, parts, rng))
				require.Equal(t, werr, err)
				require.Equal(t, want, got, "parts %q", parts)
			}
			if werr != nil {
				continue
			}
			again, err := n.Normalize(want)
			require.NoError(t, err)
			require.Equal(t, want, again, "idempotent: parts %q", parts)
			// The canonical key decodes to the parts it was made of.
			w := new(work)
			require.NoError(t, n.split(w, want))
			var dec []string
			for _, p := range w.parts {
				dec = append(dec, string(w.buf[p.start:p.end]))
			}
			var exp []string
			for _, p := range parts {
				if len(p) > 0 || o.KeepEmpty {
					exp = append(exp, string(p))
				}
			}
			if o.Dedup {
				slices.Sort(exp)
				exp = slices.Compact(exp)
			}
			if o.KeepEmpty && len(exp) == 0 {
				exp = []string{""} // the empty key is one empty part
			}
			slices.Sort(exp)
			slices.Sort(dec)
			require.Equal(t, exp, dec, "parts %q -> %q", parts, want)
		}
	}
}

// join spells parts as a client might: every escape byte and separator
// byte escaped, and now and then a needless escape.
func join(o Options, parts [][]byte, rng *rand.Rand) []byte {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, o.Sep...)
		}
		for _, c := range p {
			if c == o.Escape || bytes.IndexByte(o.Sep, c) >= 0 || rng.IntN(8) == 0 {
				b = append(b, o.Escape)
			}
			b = append(b, c)
		}
	}
	return b
}

func BenchmarkNormalize(b *testing.B) {
	n, err := New(Options{Sep: []byte("|")})
	require.NoError(b, err)
	key := []byte("country=in|os=android|model=pixel-8|lang=hi|app=shop|v=3")
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst, err = n.Append(dst[:0], key)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzNormalize: any key normalizes to a key of at most MaxLen bytes that
// is its own canonical form, or to an error.
func FuzzNormalize(f *testing.F) {
	f.Add([]byte("country=in|os=android|model=x"), true)
	f.Add([]byte(`a\|b||\\|`), false)
	f.Fuzz(func(t *testing.T, key []byte, dedup bool) {
		for _, o := range []Options{{Sep: []byte("|"), Escape: '\\', Dedup: dedup}, {Sep: []byte("||"), Escape: '\\', KeepEmpty: dedup, First: []string{"a"}}} {
			n, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			out, err := n.Normalize(key)
			if err != nil {
				continue
			}
			if len(out) > MaxKeyLen {
				t.Fatalf("%q -> %d bytes", key, len(out))
			}
			again, err := n.Normalize(out)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("%q -> %q -> %q, %v", key, out, again, err)
			}
		}
	})
}
