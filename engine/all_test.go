package engine

import (
	"fmt"
	"testing"

	"github.com/marlinkv/marlin/vfs"
	"github.com/stretchr/testify/require"
)

func TestAllRangesOverPairs(t *testing.T) {
	db, err := Open("/db", testOpts(vfs.NewMem()))
	require.NoError(t, err)
	want := map[string]string{}
	for i := range 1000 {
		k, v := fmt.Sprintf("k%04d", i), fmt.Sprintf("v%d", i)
		require.NoError(t, db.Put([]byte(k), []byte(v)))
		want[k] = v
	}
	require.NoError(t, db.Delete([]byte("k0007")))
	delete(want, "k0007")

	got := map[string]string{}
	var iterErr error
	for k, v := range db.All(&iterErr) {
		got[string(k)] = string(v)
	}
	require.NoError(t, iterErr)
	require.Equal(t, want, got)

	n := 0
	for range db.All(&iterErr) {
		if n++; n == 10 {
			break // ends the walk (its segments unpinned: Close succeeds below)
		}
	}
	require.NoError(t, iterErr)
	require.Equal(t, 10, n)

	require.NoError(t, db.Close())
	for range db.All(&iterErr) {
		t.Fatal("a closed database yields nothing")
	}
	require.ErrorIs(t, iterErr, ErrClosed)
}
