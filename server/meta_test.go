package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// metaCases are meta-protocol exchanges on one connection each, with
// memcached 1.6.18's replies (TestMetaAgainstMemcached runs them against
// the binary). CAS figures differ between servers (memcached counts
// writes, Marlin numbers records), so replies are compared with every
// " c<digits>" replaced by " c#".
var metaCases = []struct{ name, in, want string }{
	{"mn", "mn\r\n", "MN\r\n"},
	{"ms-mg", "ms k 3\r\nabc\r\nmg k v\r\nmg k\r\n", "HD\r\nVA 3\r\nabc\r\nHD\r\n"},
	{"ms-flags-ttl", "ms k 2 F5 T100\r\nhi\r\nmg k s v f t\r\n", "HD\r\nVA 2 s2 f5 t100\r\nhi\r\n"},
	{"mg-no-ttl", "ms k 2\r\nhi\r\nmg k t f\r\n", "HD\r\nHD t-1 f0\r\n"},
	{"mg-miss", "mg nope v\r\nmg nope v Oab k\r\n", "EN\r\nEN Oab knope\r\n"},
	{"mg-miss-quiet", "mg nope v q\r\nmg nope q k\r\nmn\r\n", "MN\r\n"},
	{"mg-hit-quiet", "ms k 1\r\na\r\nmg k v q\r\nmg k q\r\nmn\r\n", "HD\r\nVA 1\r\na\r\nHD\r\nMN\r\n"},
	{"mg-opaque-key", "ms k 1\r\na\r\nmg k O123 k v\r\n", "HD\r\nVA 1 O123 kk\r\na\r\n"},
	{"ms-quiet", "ms k 1 q\r\na\r\nms k 1 q ME\r\nb\r\nmg k v\r\n", "NS\r\nVA 1\r\na\r\n"},
	{"ms-cas-return", "ms k 1 c\r\na\r\nmg k c\r\n", "HD c#\r\nHD c#\r\n"},
	{"ms-modes", "ms k 1 MR\r\na\r\nms k 1 MA\r\na\r\nms k 1 MP\r\na\r\nms k 1 ME\r\na\r\nms k 1 ME\r\nb\r\n" +
		"ms k 1 MA\r\nc\r\nms k 1 MP\r\nz\r\nms k 1 MS\r\nq\r\nms k 1 MR\r\nr\r\nmg k v\r\n",
		"NS\r\nNS\r\nNS\r\nHD\r\nNS\r\nHD\r\nHD\r\nHD\r\nHD\r\nVA 1\r\nr\r\n"},
	{"ms-append-keeps", "ms k 2 F7 T100\r\nab\r\nms k 1 MA F9 T5\r\nc\r\nmg k v f t\r\n", "HD\r\nHD\r\nVA 3 f7 t100\r\nabc\r\n"},
	{"ms-bad-mode", "ms k 1 MZ\r\na\r\nmn\r\n", "CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n"},
	{"ms-long-mode", "ms k 1 MSS\r\na\r\nmn\r\n", "CLIENT_ERROR incorrect length for M token\r\nMN\r\n"},
	{"ms-no-len", "ms k\r\n", "CLIENT_ERROR bad command line format\r\n"},
	{"ms-bad-len", "ms k abc\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n"},
	{"ms-negative-len", "ms k -1\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n"},
	{"ms-bad-flag", "ms k 1 Y\r\na\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n"},
	{"ms-dup-flag", "ms k 1 T1 T2\r\na\r\nmn\r\n", "CLIENT_ERROR duplicate flag\r\nMN\r\n"},
	{"ms-bad-ttl", "ms k 1 Tx\r\na\r\nmn\r\n", "CLIENT_ERROR bad token in command line format\r\nMN\r\n"},
	{"ms-bad-client-flags", "ms k 1 Fx\r\na\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n"},
	{"ms-quiet-error", "ms k 1 q Y\r\na\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n"},
	{"ms-too-large", "ms k 1048577 T0\r\n" + strings.Repeat("z", 1048577) + "\r\nmg k\r\n",
		"SERVER_ERROR object too large for cache\r\nEN\r\n"},
	{"ms-bad-chunk", "ms k 1\r\nab\r\nmn\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n"},
	{"ms-empty", "ms k 0\r\n\r\nmg k v s\r\n", "HD\r\nVA 0 s0\r\n\r\n"},
	{"ms-negative-ttl", "ms k 1 T-1\r\na\r\nmg k v\r\n", "HD\r\nEN\r\n"},
	{"md", "md nope\r\nms k 1\r\na\r\nmd k\r\nmg k\r\nmd k q\r\nmd nope q O5 k\r\n", "NF\r\nHD\r\nHD\r\nEN\r\nNF\r\nNF O5 knope\r\n"},
	{"md-quiet-hit", "ms k 1\r\na\r\nmd k q\r\nmn\r\n", "HD\r\nMN\r\n"},
	{"md-bad-flag", "md k Y\r\nmd k q q\r\n", "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"},
	{"md-stale", "ms k 1 T100\r\na\r\nmd k I T30\r\nmg k v t\r\nmg k v\r\nmg k\r\n",
		"HD\r\nHD\r\nVA 1 t30 X W\r\na\r\nVA 1 Z X\r\na\r\nHD Z X\r\n"},
	// A shorter result is padded with spaces in place (memcached does it
	// only while no reply still holds the item, so no mg before an ma
	// here).
	{"ma", "ma n\r\nma n N0 J10 v\r\nma n v\r\nma n MD D20 v\r\nmg n v\r\n",
		"NF\r\nVA 2\r\n10\r\nVA 2\r\n11\r\nVA 1\r\n0\r\nVA 2\r\n0 \r\n"},
	{"ma-wrap", "ms n 20\r\n18446744073709551615\r\nma n v\r\nmg n v\r\n", "HD\r\nVA 1\r\n0\r\nVA 20\r\n0                   \r\n"},
	{"ma-modes", "ms n 2\r\n10\r\nma n M+ D5 v\r\nma n M- D3 v\r\nma n MI v\r\nma n MX\r\n",
		"HD\r\nVA 2\r\n15\r\nVA 2\r\n12\r\nVA 2\r\n13\r\nCLIENT_ERROR invalid mode for ma M token\r\n"},
	{"ma-quiet", "ms n 1\r\n1\r\nma n q\r\nma n q v\r\nma nope q\r\nmg n v\r\n", "HD\r\nNF\r\nVA 1\r\n3\r\n"},
	{"ma-nonnumeric", "ms n 1\r\nx\r\nma n\r\nma n q\r\n",
		"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},
	{"ma-bad", "ma n Dx\r\nma n Y\r\n", "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"},
	{"ma-tokens", "ms n 1 T100\r\n5\r\nma n O9 k t c\r\nma nope O9 k\r\n", "HD\r\nHD O9 kn t100 c#\r\nNF O9 knope\r\n"},
	{"ma-ttl-order", "ms n 1 T100\r\n5\r\nma n t T50 t\r\n", "HD\r\nCLIENT_ERROR invalid or duplicate flag\r\n"},
	{"ma-ttl", "ms n 1 T100\r\n5\r\nma n T50 t\r\nma n N0 J1 t\r\n", "HD\r\nHD t50\r\nHD t50\r\n"},
	{"ma-vivify-ttl", "ma n N100 J3 t v\r\n", "VA 1 t100\r\n3\r\n"},
	{"ma-spaces", "ms n 4\r\n 12 \r\nma n v\r\nms n 3\r\n+7x\r\nma n\r\nms n 2\r\n-0\r\nma n v\r\n",
		"HD\r\nVA 2\r\n13\r\nHD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nHD\r\nVA 1\r\n1\r\n"},
	{"base64", "ms Zm9v 3 b\r\nbar\r\nmg foo v\r\nmg Zm9v b k v\r\nmd Zm9v b k\r\nmg foo\r\n",
		"HD\r\nVA 3\r\nbar\r\nVA 3 kZm9v b\r\nbar\r\nHD kZm9v b\r\nEN\r\n"},
	{"base64-bad", "mg !!!! b\r\n", "CLIENT_ERROR error decoding key\r\n"},
	{"vivify", "mg v1 N30 t v\r\nmg v1 N30 t v\r\nmg v1 N30 s\r\n", "VA 0 t30 W\r\n\r\nVA 0 t30 Z\r\n\r\nHD s0 Z\r\n"},
	{"vivify-ttl-order", "mg v2 t N30\r\nmg v2 t\r\n", "HD t-1 W\r\nHD t30 Z\r\n"},
	{"recache", "ms k 1 T10\r\na\r\nmg k R30 v\r\nmg k R30 v\r\nms k 1 T100\r\nb\r\nmg k R30 v\r\n",
		"HD\r\nVA 1 W\r\na\r\nVA 1 Z\r\na\r\nHD\r\nVA 1\r\nb\r\n"},
	{"touch", "ms k 1 T10\r\na\r\nmg k T100 t\r\nmg k t\r\nmg k T0 t\r\n", "HD\r\nHD t100\r\nHD t100\r\nHD t-1\r\n"},
	{"hit-before", "ms k 1\r\na\r\nmg k h l\r\nmg k h l\r\nmg k h u\r\n", "HD\r\nHD h0 l0\r\nHD h1 l0\r\nHD h1\r\n"},
	{"mg-too-many", "mg k a b c d e f g h i j k l m n o p q r\r\n", "CLIENT_ERROR options flags are too long\r\n"},
	{"md-too-many", "md k a b c d e f g h i j k l m n o p q r\r\n", "CLIENT_ERROR options flags too long\r\n"},
	{"mg-dup", "mg k v v\r\nmg k Z\r\n", "CLIENT_ERROR duplicate flag\r\nCLIENT_ERROR invalid flag\r\n"},
	{"mg-key-too-long", "mg " + strings.Repeat("x", 251) + " v\r\nms " + strings.Repeat("x", 251) + " 1\r\n",
		"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n"},
	{"mg-opaque-too-long", "mg k O" + strings.Repeat("o", 32) + "\r\n", "CLIENT_ERROR opaque token too long\r\n"},
	{"proxy-tokens", "ms k 1 Pabc L1\r\na\r\nmg k v Pxyz Lq\r\n", "HD\r\nVA 1\r\na\r\n"},
	{"unknown-meta", "mx k\r\nmg\r\nmd\r\nma\r\nm  k\r\nm \r\n", "ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\n"},
	{"me", "me nope\r\nme\r\n", "EN\r\nCLIENT_ERROR bad command line format\r\n"},
	{"mixed", "set k 3 0 2\r\nhi\r\nmg k v f\r\nms k 2 F4\r\nyo\r\nget k\r\n", "STORED\r\nVA 2 f3\r\nhi\r\nHD\r\nVALUE k 4 2\r\nyo\r\nEND\r\n"},
}

var metaCasRe = regexp.MustCompile(` c\d+`)

func normalizeMeta(s string) string { return metaCasRe.ReplaceAllString(s, " c#") }

func runMetaCases(t *testing.T, addr string) {
	for _, c := range metaCases {
		t.Run(c.name, func(t *testing.T) {
			exchange(t, addr, "md k\r\nmd n\r\nmd v1\r\nmd v2\r\nmd foo\r\n")
			require.Equal(t, c.want, normalizeMeta(exchange(t, addr, c.in)))
		})
	}
}

func TestMetaProtocol(t *testing.T) {
	forEachIO(t, func(t *testing.T, m IOMode) {
		addr, _, _ := startServer(t, "", Config{IO: m})
		runMetaCases(t, addr)
	})
}

func TestMetaAgainstMemcached(t *testing.T) {
	runMetaCases(t, startMemcached(t))
}

// metaSession is one connection for a scripted exchange.
type metaSession struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func newMetaSession(t *testing.T, addr string) *metaSession {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &metaSession{t: t, c: c, rd: bufio.NewReader(c)}
}

// do sends in and returns the next n reply lines (without CRLF).
func (s *metaSession) do(in string, n int) []string {
	s.t.Helper()
	_, err := s.c.Write([]byte(in))
	require.NoError(s.t, err)
	var out []string
	for range n {
		_ = s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := s.rd.ReadString('\n')
		require.NoError(s.t, err)
		out = append(out, strings.TrimSuffix(l, "\r\n"))
	}
	return out
}

var casTokRe = regexp.MustCompile(` c(\d+)`)

func (s *metaSession) cas(line string) string {
	s.t.Helper()
	m := casTokRe.FindStringSubmatch(line)
	require.NotNil(s.t, m, "no CAS in %q", line)
	return m[1]
}

// metaCasScript runs the CAS-dependent behaviour on addr: ms and md with
// C, and ms I (a late write with an older CAS stored as stale).
func metaCasScript(t *testing.T, addr string) {
	exchange(t, addr, "md k\r\nmd n\r\n")
	s := newMetaSession(t, addr)
	c1 := s.cas(s.do("ms k 1 c\r\na\r\n", 1)[0])
	require.Equal(t, []string{"EX"}, s.do("ms k 1 C"+c1+"1\r\nb\r\n", 1))
	require.Equal(t, []string{"NF"}, s.do("ms nope 1 C"+c1+"\r\nb\r\n", 1))
	c2 := s.cas(s.do("ms k 1 c C"+c1+"\r\nb\r\n", 1)[0])
	require.NotEqual(t, c1, c2)
	// I: the older CAS c1 is stored, marked stale; mg sees X and wins.
	require.Equal(t, []string{"HD"}, s.do("ms k 1 I C"+c1+"\r\nc\r\n", 1))
	require.Equal(t, []string{"VA 1 X W", "c"}, s.do("mg k v\r\n", 2))
	// A newer CAS than the item's is no late write: EX even with I.
	c3 := s.cas(s.do("mg k c\r\n", 1)[0])
	require.Equal(t, []string{"EX"}, s.do("ms k 1 I C"+c3+"9\r\nd\r\n", 1))
	// Append checks a nonzero C; add ignores it.
	require.Equal(t, []string{"EX"}, s.do("ms k 1 MA C1\r\nx\r\n", 1))
	require.Equal(t, []string{"HD"}, s.do("ms k 1 MA C"+c3+"\r\nx\r\n", 1))
	require.Equal(t, []string{"NS"}, s.do("ms k 1 ME C"+c3+"\r\nx\r\n", 1))
	// md C.
	c4 := s.cas(s.do("mg k c\r\n", 1)[0])
	require.Equal(t, []string{"EX"}, s.do("md k C1\r\n", 1))
	require.Equal(t, []string{"HD"}, s.do("md k C"+c4+"\r\n", 1))
	require.Equal(t, []string{"EN"}, s.do("mg k\r\n", 1))
	// ma C: a wrong one is EX, the right one applies; C0 checks nothing.
	c5 := s.cas(s.do("ma n N0 J5 c\r\n", 1)[0])
	require.Equal(t, []string{"EX"}, s.do("ma n C1\r\n", 1))
	require.Equal(t, []string{"VA 1", "6"}, s.do("ma n C"+c5+" v\r\n", 2))
	require.Equal(t, []string{"VA 1", "7"}, s.do("ma n C0 v\r\n", 2))
	// gets and mg agree on the CAS; incr gives a new one.
	c6 := s.cas(s.do("mg n c\r\n", 1)[0])
	require.Equal(t, []string{"VALUE n 0 1 " + c6, "7", "END"}, s.do("gets n\r\n", 3))
}

func TestMetaCas(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{})
	metaCasScript(t, addr)
}

func TestMetaCasAgainstMemcached(t *testing.T) {
	metaCasScript(t, startMemcached(t))
}

// TestMetaExtensions covers what memcached added after 1.6.18 and this
// server does as its later versions: E (the CAS a write gives the item)
// and mg C (no value when the CAS matches).
func TestMetaExtensions(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{})
	s := newMetaSession(t, addr)
	require.Equal(t, []string{"HD c500"}, s.do("ms k 1 E500 c\r\na\r\n", 1))
	require.Equal(t, []string{"VALUE k 0 1 500", "a", "END"}, s.do("gets k\r\n", 3))
	require.Equal(t, []string{"HD"}, s.do("mg k C500 v\r\n", 1), "the client has this version: no value")
	require.Equal(t, []string{"VA 1", "a"}, s.do("mg k C499 v\r\n", 2))
	require.Equal(t, []string{"HD"}, s.do("md k I E600\r\n", 1))
	require.Equal(t, []string{"HD c600 X W"}, s.do("mg k c\r\n", 1))
	require.Equal(t, []string{"HD c700"}, s.do("ma n N0 E700 c\r\n", 1))
	require.Equal(t, []string{"HD c701"}, s.do("ma n E701 c\r\n", 1))
	require.Equal(t, []string{"HD c800 W"}, s.do("mg v N30 E800 c\r\n", 1))
	// Append with N creates the item on a miss.
	require.Equal(t, []string{"NS"}, s.do("ms a 1 MA\r\nx\r\n", 1))
	require.Equal(t, []string{"HD"}, s.do("ms a 1 MA N100\r\nx\r\n", 1))
	require.Equal(t, []string{"VA 1 t100", "x"}, s.do("mg a v t\r\n", 2))
}

// TestMetaStateSurvivesRestart: the marks memcached keeps in RAM are in
// the item's header here, so a restart keeps them: stale, won, fetched,
// a base64 key's form, a client-chosen CAS, and a TTL.
func TestMetaStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	{
		addr, s, db, _ := openServer(t, dir, Config{})
		m := newMetaSession(t, addr)
		m.do("ms k 1 T1000\r\na\r\nmd k I\r\nmg k\r\n", 3) // stale, then won
		m.do("ms Zm9v 3 b E42\r\nbar\r\nmg Zm9v b h\r\n", 2)
		m.c.Close()
		require.NoError(t, s.Shutdown(context.Background()))
		require.NoError(t, db.Close())
	}
	addr, _, _ := startServer(t, dir, Config{})
	m := newMetaSession(t, addr)
	require.Equal(t, []string{"HD Z X"}, m.do("mg k\r\n", 1))
	got := m.do("mg k t\r\n", 1)[0]
	require.Regexp(t, `^HD t(99\d|1000) Z X$`, got)
	require.Equal(t, []string{"VA 3 kZm9v b c42 h1", "bar"}, m.do("mg Zm9v b k v c h\r\n", 2))
}

// TestFlushAllWithClientCas: flush_all goes by the record's own sequence
// number, so an item whose client-chosen CAS is above every sequence
// number is flushed too, and one stored after the flush with a tiny CAS
// is not.
func TestFlushAllWithClientCas(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{})
	s := newMetaSession(t, addr)
	require.Equal(t, []string{"HD", "OK"}, s.do("ms hi 1 E18446744073709551615\r\na\r\nflush_all\r\n", 2))
	require.Equal(t, []string{"EN"}, s.do("mg hi v\r\n", 1))
	require.Equal(t, []string{"HD", "VA 1 c1", "b"}, s.do("ms lo 1 E1\r\nb\r\nmg lo v c\r\n", 3))
}

// TestReservedKeyUnreachable: the flush state's key cannot be written by
// a binary client (its keys may hold any byte), so a flush survives.
func TestReservedKeyUnreachable(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{})
	exchange(t, addr, "set k 0 0 1\r\na\r\nflush_all\r\n")
	got := binSession(t, addr, [][]byte{binRequest(opSet, flushKey, be32(0, 0), []byte("xxxxxxxxxxxxxxxx"), 0)})
	require.Len(t, got, 1)
	require.Equal(t, fmt.Sprintf("%04x", stInvalid), got[0][12:16], "status of a set of the reserved key")
	require.Equal(t, "END\r\n", exchange(t, addr, "get k\r\n"))
	require.Equal(t, "STORED\r\nVALUE k 0 1\r\nb\r\nEND\r\n", exchange(t, addr, "set k 0 0 1\r\nb\r\nget k\r\n"))
}
