package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// viewDeadline bounds how long a test waits for an event that a deadlock
// would prevent: the test fails instead of hanging.
const viewDeadline = 10 * time.Second

// waitOrFail waits for ch or fails the test after viewDeadline.
func waitOrFail(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		require.NoError(t, err, what)
	case <-time.After(viewDeadline):
		t.Fatalf("%s: still blocked after %v (deadlock)", what, viewDeadline)
	}
}

// TestViewNestedReadsWithFlush: a Get and a nested View inside a View
// callback, on keys in the unflushed tail, while a writer forces a flush.
// Before the fix the callback ran under tailMu.RLock; the flush queued for
// tailMu.Lock (holding db.mu), and the nested read's RLock queued behind it:
// every reader and writer hung.
func TestViewNestedReadsWithFlush(t *testing.T) {
	db, err := Open("/db", testOpts(vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("a"), []byte("va")))
	require.NoError(t, db.Put([]byte("b"), []byte("vb")))

	err = db.View([]byte("a"), func(v []byte) error {
		require.Equal(t, "va", string(v))
		// A writer that flushes the tail (Sync takes db.mu, then tailMu).
		synced := make(chan error, 1)
		go func() { synced <- db.Sync() }()
		// Wait until the flush either finished (nothing held tailMu) or is
		// queued for tailMu (a read lock is held by this callback): then a
		// nested read lock would queue behind it.
		for {
			select {
			case err := <-synced:
				synced <- err
			default:
				if !db.tailMu.TryRLock() {
					goto queued // a writer is waiting for tailMu
				}
				db.tailMu.RUnlock()
				continue
			}
			break
		}
	queued:
		got := make(chan error, 1)
		go func() {
			// Run the nested reads on another goroutine only so that a
			// deadlock fails the test instead of hanging it; the callback's
			// goroutine waits for them, as if it made them itself.
			v, err := db.Get([]byte("b"))
			if err == nil && string(v) != "vb" {
				err = fmt.Errorf("nested Get: %q", v)
			}
			if err == nil {
				err = db.View([]byte("a"), func(v []byte) error {
					if string(v) != "va" {
						return fmt.Errorf("nested View: %q", v)
					}
					return nil
				})
			}
			got <- err
		}()
		waitOrFail(t, got, "nested reads in a View callback")
		waitOrFail(t, synced, "flush during a View callback")
		// The value handed to fn is still intact after the flush reused
		// the tail buffer.
		require.Equal(t, "va", string(v))
		return nil
	})
	require.NoError(t, err)
}

// TestViewSlowCallbackDoesNotBlockWriters: while a View callback on a key in
// the tail is still running, a writer that must flush and fsync (Put then
// Sync) completes. Ordering, not wall time: the callback returns only after
// the writer has finished.
func TestViewSlowCallbackDoesNotBlockWriters(t *testing.T) {
	db, err := Open("/db", testOpts(vfs.NewMem()))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Put([]byte("k"), []byte("v")))
	err = db.View([]byte("k"), func(v []byte) error {
		done := make(chan error, 1)
		go func() {
			for i := range 200 { // more than the 4 KiB tail buffer: flushes
				if err := db.Put(fmt.Appendf(nil, "w%d", i), make([]byte, 100)); err != nil {
					done <- err
					return
				}
			}
			done <- db.Sync()
		}()
		waitOrFail(t, done, "writer during a slow View callback")
		require.Equal(t, "v", string(v))
		return nil
	})
	require.NoError(t, err)
}
