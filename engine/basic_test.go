package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

func testOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, SegmentSize: 64 << 10, WriteBufferSize: 4096, Sync: SyncNone, Logger: discardLogger}
}

func TestPutGetReopen(t *testing.T) {
	for _, name := range []string{"mem", "os"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = vfs.NewMem()
			dir := "/db"
			if name == "os" {
				fs, dir = vfs.Default, t.TempDir()
			}
			db, err := Open(dir, testOpts(fs))
			require.NoError(t, err)
			for i := range 5000 {
				require.NoError(t, db.Put(fmt.Appendf(nil, "key-%d", i), fmt.Appendf(nil, "value-%d", i)))
			}
			for i := 0; i < 5000; i += 3 {
				require.NoError(t, db.Delete(fmt.Appendf(nil, "key-%d", i)))
			}
			check := func(db *DB) {
				for i := range 5000 {
					v, err := db.Get(fmt.Appendf(nil, "key-%d", i))
					if i%3 == 0 {
						require.ErrorIs(t, err, ErrNotFound, i)
						continue
					}
					require.NoError(t, err, i)
					require.Equal(t, fmt.Sprintf("value-%d", i), string(v))
				}
			}
			check(db)
			st, err := db.Stats()
			require.NoError(t, err)
			require.EqualValues(t, 5000-1667, st.Keys)
			require.Greater(t, len(st.Segments), 1)
			require.NoError(t, db.Close())
			require.NoError(t, db.Close())
			_, err = db.Get([]byte("key-1"))
			require.ErrorIs(t, err, ErrClosed)

			db, err = Open(dir, testOpts(fs))
			require.NoError(t, err)
			check(db)
			st2, err := db.Stats()
			require.NoError(t, err)
			require.Equal(t, st.Keys, st2.Keys)
			require.Equal(t, st.LiveBytes, st2.LiveBytes)
			require.NoError(t, db.Close())
		})
	}
}

func TestTTLAndBatch(t *testing.T) {
	db, err := Open("/db", testOpts(vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.PutTTL([]byte("a"), []byte("1"), 30*time.Millisecond))
	v, err := db.Get([]byte("a"))
	require.NoError(t, err)
	require.Equal(t, "1", string(v))
	time.Sleep(40 * time.Millisecond)
	_, err = db.Get([]byte("a"))
	require.ErrorIs(t, err, ErrNotFound)

	var b Batch
	b.Put([]byte("x"), []byte("1"))
	b.Put([]byte("y"), []byte("2"))
	b.Delete([]byte("x"))
	require.NoError(t, db.Write(&b))
	_, err = db.Get([]byte("x"))
	require.True(t, errors.Is(err, ErrNotFound))
	v, err = db.Get([]byte("y"))
	require.NoError(t, err)
	require.Equal(t, "2", string(v))
}
