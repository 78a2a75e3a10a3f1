package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// TestBatchWriteModel drives the batch path (one index walk per put,
// duplicates handled apart) with random batches over a small key space:
// puts of new and present keys, deletes of present and absent keys, and
// the same key several times in one batch in every order. After each
// batch the DB must match a model, and every segment's live bytes must
// equal a recount from the index; at the end Verify (full replay vs the
// snapshot, accounting) must be clean and a reopen must match the model.
func TestBatchWriteModel(t *testing.T) {
	fs := vfs.NewMem()
	o := lcOpts(fs)
	db, err := Open("/db", o)
	require.NoError(t, err)
	model := map[string]string{}
	rnd := rand.New(rand.NewPCG(3, 4))
	var b Batch
	checkLive := func(when string) {
		db.mu.Lock()
		defer db.mu.Unlock()
		counted := db.liveRecount()
		for i := range db.segs {
			if sf := db.segs[i].Load(); sf != nil {
				require.Equal(t, counted[uint16(i)], sf.live.Load(), "%s: segment %s live bytes", when, sf.name)
			}
		}
		require.NoError(t, db.ix.Check())
	}
	for round := range 300 {
		b.Reset()
		n := 1 + rnd.IntN(12)
		for j := range n {
			k := fmt.Sprintf("key-%02d", rnd.IntN(40))
			if rnd.IntN(3) == 0 {
				b.Delete([]byte(k))
				delete(model, k)
			} else {
				v := fmt.Sprintf("v%d.%d", round, j)
				b.Put([]byte(k), []byte(v))
				model[k] = v
			}
		}
		require.NoError(t, db.Write(&b), "round %d", round)
		if round%10 == 0 {
			checkLive(fmt.Sprintf("round %d", round))
		}
	}
	checkLive("end")
	check := func(db *DB) {
		for i := range 40 {
			k := fmt.Sprintf("key-%02d", i)
			v, err := db.Get([]byte(k))
			if want, ok := model[k]; ok {
				require.NoError(t, err, k)
				require.Equal(t, want, string(v), k)
			} else {
				require.ErrorIs(t, err, ErrNotFound, k)
			}
		}
	}
	check(db)
	require.NoError(t, db.Close())
	rep, err := Verify("/db", o)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep.Problems)
	require.Equal(t, int64(len(model)), rep.Keys)
	db, err = Open("/db", o)
	require.NoError(t, err)
	check(db)
	require.NoError(t, db.Close())
}
