package engine

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
)

// TestPeekPutKey: the prefetch's peek finds the key of a put record (with
// or without expiry), no key in a tombstone, and stops (span 0) on a
// header that does not parse or a key cut off by the buffer's end.
func TestPeekPutKey(t *testing.T) {
	enc := func(r segment.Record) []byte {
		b := make([]byte, segment.Size(len(r.Key), len(r.Value), r.Expiry != 0))
		segment.Encode(b, 1, segment.HeaderSize, &r)
		return b
	}
	put := enc(segment.Record{Kind: segment.KindPut, Seq: 7, Key: []byte("some-key"), Value: []byte("v")})
	key, span := peekPutKey(put)
	require.Equal(t, "some-key", string(key))
	require.Equal(t, len(put), span)

	ttl := enc(segment.Record{Kind: segment.KindPut, Seq: 8, Key: []byte("k2"), Value: make([]byte, 300), Expiry: 12345})
	key, span = peekPutKey(ttl)
	require.Equal(t, "k2", string(key))
	require.Equal(t, len(ttl), span)

	del := enc(segment.Record{Kind: segment.KindDelete, Seq: 9, Key: []byte("gone"), Value: make([]byte, 8)})
	key, span = peekPutKey(del)
	require.Nil(t, key)
	require.Equal(t, len(del), span)

	_, span = peekPutKey(put[:16]) // the key runs past the buffer
	require.Zero(t, span)
	_, span = peekPutKey(make([]byte, 64)) // zeros: no record kind
	require.Zero(t, span)
	_, span = peekPutKey(nil)
	require.Zero(t, span)
}
