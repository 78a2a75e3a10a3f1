package arena

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// resident reports, page by page, whether the pages of b are resident
// (mincore). b must start on a page boundary.
func resident(t *testing.T, b []byte) []bool {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	n := (len(b) + PageSize - 1) / PageSize
	vec := make([]byte, n)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))),
		uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, e, "mincore: %v", e)
	out := make([]bool, n)
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

func requireZero(t *testing.T, b []byte, msgAndArgs ...any) {
	t.Helper()
	for i, c := range b {
		if c != 0 {
			require.Failf(t, "block not zeroed", "byte %d is %#x; %v", i, c, msgAndArgs)
		}
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func TestMapUnmap(t *testing.T) {
	_, err := Map(0)
	require.Error(t, err)
	_, err = Map(-5)
	require.Error(t, err)
	require.NoError(t, Unmap(nil))

	for _, n := range []int{1, 100, PageSize, 3*PageSize + 7, 1 << 20} {
		b, err := Map(n)
		require.NoError(t, err)
		require.Len(t, b, n)
		require.Zero(t, uintptr(unsafe.Pointer(&b[0]))%uintptr(PageSize), "mapping not page aligned")
		requireZero(t, b)
		fill(b, 0xAB)
		require.Equal(t, byte(0xAB), b[n-1])
		require.NoError(t, Unmap(b))
	}

	// Two live mappings are distinct.
	b1, err := Map(PageSize)
	require.NoError(t, err)
	b2, err := Map(PageSize)
	require.NoError(t, err)
	fill(b1, 1)
	fill(b2, 2)
	require.Equal(t, byte(1), b1[PageSize-1])
	require.Equal(t, byte(2), b2[0])
	require.NoError(t, Unmap(b1))
	require.NoError(t, Unmap(b2))
}

func TestReserveHalves(t *testing.T) {
	// No kernel maps 4 EiB; Reserve must halve until it gets something.
	b, err := Reserve(1<<62, 1<<20)
	require.NoError(t, err)
	c := len(b)
	require.GreaterOrEqual(t, c, 1<<20)
	require.Less(t, c, 1<<62)
	require.Zero(t, c&(c-1), "size %d should be the request halved", c)
	require.NoError(t, Unmap(b))
}

func TestReserveRelease(t *testing.T) {
	b, err := Reserve(64<<20, 1<<20)
	require.NoError(t, err)
	defer func() { require.NoError(t, Unmap(b)) }()
	require.Len(t, b, 64<<20)
	ps := PageSize
	require.Equal(t, []bool{false, false, false, false}, resident(t, b[:4*ps]), "reserved pages start non-resident")
	fill(b[:4*ps], 0x77)
	require.Equal(t, []bool{true, true, true, true}, resident(t, b[:4*ps]))
	Release(b[ps : 3*ps])
	require.Equal(t, []bool{true, false, false, true}, resident(t, b[:4*ps]))
	require.Equal(t, byte(0x77), b[ps-1])
	require.Equal(t, byte(0x77), b[3*ps])
	requireZero(t, b[ps:3*ps], "released pages read as zeros")
	Release(nil) // no-op
	_, err = Reserve(1<<62, 1<<61)
	require.Error(t, err)
}
