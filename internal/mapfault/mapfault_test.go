package mapfault

import (
	"errors"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// sink keeps the test's buffer on the heap: a stack buffer may move when
// the stack grows, and its address taken as a number would go stale.
var sink []byte

func TestOffset(t *testing.T) {
	sink = make([]byte, 10, 16)
	b := sink
	base := uintptr(unsafe.Pointer(&b[0]))
	off, ok := Offset(b, base+3)
	require.True(t, ok)
	require.EqualValues(t, 3, off)
	_, ok = Offset(b, base+15) // within the capacity
	require.True(t, ok)
	_, ok = Offset(b, base+16)
	require.False(t, ok)
	_, ok = Offset(b, base-1)
	require.False(t, ok)
	_, ok = Offset(nil, base)
	require.False(t, ok)
}

// TestErrorOnlyForFaults: a panic value that is not a memory fault gives
// nil (the caller re-raises it).
func TestErrorOnlyForFaults(t *testing.T) {
	errIO := errors.New("io")
	require.Nil(t, Error("boom", errIO, "x", nil))
	require.Nil(t, Error(errors.New("plain error"), errIO, "x", nil))
	var r any
	func() {
		defer func() { r = recover() }()
		var s []int
		_ = s[3] // a runtime.Error without Addr
	}()
	require.Nil(t, Error(r, errIO, "x", nil))
}
