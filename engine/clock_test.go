package engine

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/marlinkv/marlin/vfs"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for Options.Clock.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	return c
}

func (c *fakeClock) Now() time.Time           { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration)  { c.ms.Add(d.Milliseconds()) }
func (c *fakeClock) Set(t time.Time)          { c.ms.Store(t.UnixMilli()) }
func (c *fakeClock) opts(o *Options) *Options { o.Clock = c.Now; return o }

// TestClockDrivesExpiry: TTLs are stamped and judged by Options.Clock,
// for single puts and batches alike, in reads, iteration and compaction.
func TestClockDrivesExpiry(t *testing.T) {
	clk := newFakeClock()
	o := clk.opts(testOpts(vfs.NewMem()))
	o.ExpiryInterval = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.PutTTL([]byte("a"), []byte("1"), time.Hour))
	var b Batch
	b.PutTTL([]byte("b"), []byte("2"), 2*time.Hour)
	// The batch's expiry is stamped when Write applies it, not when PutTTL
	// was called.
	clk.Advance(30 * time.Minute)
	require.NoError(t, db.Write(&b))

	clk.Advance(59 * time.Minute) // a: 89 min of 60
	_, err = db.Get([]byte("a"))
	require.ErrorIs(t, err, ErrNotFound)
	v, err := db.Get([]byte("b"))
	require.NoError(t, err)
	require.Equal(t, "2", string(v))

	clk.Advance(time.Hour + time.Minute) // b: 2h of 2h
	_, err = db.Get([]byte("b"))
	require.ErrorIs(t, err, ErrNotFound)
	n := 0
	require.NoError(t, db.ForEach(func(k, v []byte) error { n++; return nil }))
	require.Zero(t, n)

	// A bad TTL in a batch fails the whole batch.
	b.Reset()
	b.Put([]byte("c"), []byte("3"))
	b.PutTTL([]byte("d"), []byte("4"), 0)
	require.ErrorIs(t, db.Write(&b), ErrBadTTL)
	_, err = db.Get([]byte("c"))
	require.ErrorIs(t, err, ErrNotFound)
}

// TestClockStepsBack: a clock that steps back brings no expired key back,
// neither in the running DB nor after a restart from a snapshot written
// after the key expired.
func TestClockStepsBack(t *testing.T) {
	clk := newFakeClock()
	fs := vfs.NewMem()
	o := clk.opts(testOpts(fs))
	o.ExpiryInterval = -1
	db, err := Open("/db", o)
	require.NoError(t, err)
	require.NoError(t, db.PutTTL([]byte("k"), []byte("v"), time.Minute))
	start := clk.Now()
	clk.Advance(2 * time.Minute)
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound)
	clk.Set(start) // the clock steps back two minutes
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound, "expired key came back when the clock stepped back")
	require.NoError(t, db.Close()) // writes a snapshot stamped with the later time

	db, err = Open("/db", o)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Get([]byte("k"))
	require.ErrorIs(t, err, ErrNotFound, "expired key came back after a restart with the clock behind")
}
