package engine

import (
	"testing"
	"time"

	"github.com/marlinkv/marlin/vfs"
	"github.com/stretchr/testify/require"
)

// TestWriteOptionsSync: under SyncNone, a write with Sync survives a
// crash (the filesystem keeping only what was fsynced); one without it
// need not.
func TestWriteOptionsSync(t *testing.T) {
	fs := vfs.NewMem()
	o := testOpts(fs) // SyncNone
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.Put([]byte("first"), []byte("v"))) // durable only with what follows
	require.NoError(t, db.PutWith([]byte("synced"), []byte("v"), WriteOptions{Sync: true, TTL: time.Hour}))
	var b Batch
	b.Put([]byte("batched"), []byte("v"))
	require.NoError(t, db.WriteWith(&b, WriteOptions{Sync: true}))
	require.NoError(t, db.Put([]byte("synced-then-deleted"), []byte("v")))
	require.NoError(t, db.DeleteWith([]byte("synced-then-deleted"), WriteOptions{Sync: true}))
	require.NoError(t, db.Put([]byte("unsynced"), []byte("v")))
	require.ErrorIs(t, db.WriteWith(&b, WriteOptions{TTL: time.Second}), ErrBadTTL)

	crashed := fs.CrashClone(nil) // exactly what was fsynced
	require.NoError(t, db.Close())
	db2, err := Open("/db", testOpts(crashed))
	require.NoError(t, err)
	defer db2.Close()
	for _, k := range []string{"first", "synced", "batched"} {
		_, err := db2.Get([]byte(k))
		require.NoError(t, err, "%s was made durable by a Sync write", k)
	}
	exp, err := db2.Expiry([]byte("synced"))
	require.NoError(t, err)
	require.False(t, exp.IsZero(), "the TTL was written")
	_, err = db2.Get([]byte("synced-then-deleted"))
	require.ErrorIs(t, err, ErrNotFound)
}
