package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/keynorm"
)

// TestNormalizeKeys: with a normalizer, every protocol reads and writes
// one item for every spelling of a composite key; replies name the key
// as sent; a key that does not normalize is refused and its data block
// dropped, and the connection goes on.
func TestNormalizeKeys(t *testing.T) {
	n, err := keynorm.New(keynorm.Options{Sep: []byte("||"), Escape: '\\', Dedup: true})
	require.NoError(t, err)
	addr, _, _ := startServer(t, "", Config{Normalizer: n})

	require.Equal(t, "STORED\r\nVALUE c=in||os=a 5 1\r\nx\r\nVALUE os=a||c=in||os=a 5 1\r\nx\r\nEND\r\n",
		exchange(t, addr, "set os=a||c=in 5 0 1\r\nx\r\nget c=in||os=a os=a||c=in||os=a\r\n"))
	require.Equal(t, "DELETED\r\nEND\r\n", exchange(t, addr, "delete c=in||os=a\r\nget os=a||c=in\r\n"))

	// Meta: k names the key as sent.
	require.Equal(t, "HD\r\nVA 1 kc=in||os=a\r\ny\r\nHD\r\nEN\r\n",
		exchange(t, addr, "ms os=a||c=in 1\r\ny\r\nmg c=in||os=a v k\r\nmd os=a||c=in\r\nmg c=in||os=a\r\n"))

	// Binary: getk answers with the key it was asked.
	got := binSession(t, addr, [][]byte{
		binRequest(opSet, []byte("b||a"), be32(3, 0), []byte("v"), 0),
		binRequest(opGetK, []byte("a||b"), nil, nil, 0),
	})
	require.Len(t, got, 2)
	require.Contains(t, got[1], `|"\x00\x00\x00\x03a||bv";`)

	// A key whose canonical form is over 250 bytes (the trailing '|'
	// must be escaped), or that ends in an escape byte: refused, the
	// data block dropped, the connection goes on.
	long := strings.Repeat("x", 249) + "|"
	require.Equal(t, "CLIENT_ERROR keynorm: normalized key too long: over 250 bytes\r\n"+
		"CLIENT_ERROR keynorm: key ends in an escape byte\r\nCLIENT_ERROR keynorm: key ends in an escape byte\r\nEND\r\n",
		exchange(t, addr, fmt.Sprintf("set %s 0 0 3\r\nabc\r\nms a\\ 2\r\nzz\r\nget ok a\\\r\nget %s0\r\n", long, strings.Repeat("y", 10))))
	got = binSession(t, addr, [][]byte{binRequest(opGet, []byte(long), nil, nil, 0)})
	require.Equal(t, fmt.Sprintf("%04x", stInvalid), got[0][12:16])
}
