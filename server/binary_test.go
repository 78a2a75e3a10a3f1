package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binRequest builds one binary request.
func binRequest(op byte, key, extras, value []byte, cas uint64) []byte {
	h := make([]byte, binHeader)
	h[0] = binReqMagic
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], 0xdeadbeef)
	binary.BigEndian.PutUint64(h[16:], cas)
	return append(append(append(h, extras...), key...), value...)
}

func be32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// binSession sends reqs one at a time and returns each response packet
// (or "" for a quiet success, seen as the next noop's answer coming
// first), with its CAS field zeroed: servers number versions differently.
func binSession(t *testing.T, addr string, reqs [][]byte) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	var out []string
	for _, r := range reqs {
		_, err := c.Write(append(r, binRequest(opNoop, nil, nil, nil, 0)...))
		require.NoError(t, err)
		got := ""
		for {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			h := make([]byte, binHeader)
			_, err := io.ReadFull(c, h)
			require.NoError(t, err)
			body := make([]byte, binary.BigEndian.Uint32(h[8:]))
			_, err = io.ReadFull(c, body)
			require.NoError(t, err)
			if h[1] == opNoop {
				break
			}
			for i := 16; i < 24; i++ {
				h[i] = 0
			}
			got += fmt.Sprintf("%x|%q;", h, body)
		}
		out = append(out, got)
	}
	return out
}

// arith is the extras of an increment or decrement.
func arith(delta, initial uint64, exp uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, delta)
	b = binary.BigEndian.AppendUint64(b, initial)
	return binary.BigEndian.AppendUint32(b, exp)
}

// binSequence covers every opcode the server answers, quiet variants and
// the error statuses.
func binSequence() [][]byte {
	k := []byte("bk")
	return [][]byte{
		binRequest(opGet, k, nil, nil, 0),
		binRequest(opGetQ, k, nil, nil, 0),
		binRequest(opSet, k, be32(5, 0), []byte("val"), 0),
		binRequest(opGet, k, nil, nil, 0),
		binRequest(opGetK, k, nil, nil, 0),
		binRequest(opGetKQ, []byte("nope"), nil, nil, 0),
		binRequest(opAdd, k, be32(0, 0), []byte("x"), 0),
		binRequest(opAddQ, []byte("bk2"), be32(1, 0), []byte("y"), 0),
		binRequest(opReplace, []byte("nope"), be32(0, 0), []byte("x"), 0),
		binRequest(opReplaceQ, k, be32(9, 0), []byte("new"), 0),
		binRequest(opAppend, k, nil, []byte("+a"), 0),
		binRequest(opPrependQ, k, nil, []byte("p+"), 0),
		binRequest(opGet, k, nil, nil, 0),
		binRequest(opSet, k, be32(0, 0), []byte("z"), 12345), // wrong CAS
		binRequest(opIncrement, []byte("ctr"), arith(2, 10, 0), nil, 0),
		binRequest(opIncrement, []byte("ctr"), arith(2, 10, 0), nil, 0),
		binRequest(opDecrement, []byte("ctr"), arith(100, 0, 0), nil, 0),
		binRequest(opIncrement, []byte("nope"), arith(1, 0, 0xffffffff), nil, 0),
		binRequest(opIncrement, k, arith(1, 0, 0), nil, 0),
		binRequest(opTouch, k, be32(100), nil, 0),
		binRequest(opGAT, k, be32(100), nil, 0),
		binRequest(opDelete, []byte("nope"), nil, nil, 0),
		binRequest(opDeleteQ, k, nil, nil, 0),
		binRequest(opGet, k, nil, nil, 0),
		binRequest(opFlush, nil, nil, nil, 0),
		binRequest(opGet, []byte("bk2"), nil, nil, 0),
		binRequest(0x55, nil, nil, nil, 0), // unknown
	}
}

// TestBinaryProtocol runs binSequence against the server and the
// memcached binary and compares every response byte (CAS aside).
func TestBinaryProtocol(t *testing.T) {
	mc := startMemcached(t)
	want := binSession(t, mc, binSequence())
	forEachIO(t, func(t *testing.T, m IOMode) {
		addr, _, _ := startServer(t, "", Config{IO: m})
		got := binSession(t, addr, binSequence())
		for i := range want {
			require.Equal(t, want[i], got[i], "request %d (opcode %#x)", i, binSequence()[i][1])
		}
	})
}
