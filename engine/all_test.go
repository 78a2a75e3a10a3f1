package engine

import (
	"fmt"
	"testing"
	"time"

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

func TestExpiry(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	o := testOpts(vfs.NewMem())
	o.Clock = func() time.Time { return now }
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("forever"), []byte("v")))
	require.NoError(t, db.PutTTL([]byte("session"), []byte("v"), time.Hour))
	exp, err := db.Expiry([]byte("forever"))
	require.NoError(t, err)
	require.True(t, exp.IsZero())
	exp, err = db.Expiry([]byte("session"))
	require.NoError(t, err)
	require.Equal(t, now.Add(time.Hour).UnixMilli(), exp.UnixMilli())
	_, err = db.Expiry([]byte("absent"))
	require.ErrorIs(t, err, ErrNotFound)
	now = now.Add(2 * time.Hour)
	_, err = db.Expiry([]byte("session"))
	require.ErrorIs(t, err, ErrNotFound, "expired")
}
