package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/fill"
)

// Read-through without waiting (Options.Loader): a Get, AppendValue,
// AppendItem or View that finds nothing returns ErrNotFound at once and
// queues the key with a fill.Queue, whose workers call the Loader and
// store what it returns, so a later read hits. Has does not queue: it
// asks about the database, not the source.
//
// A loaded value is stored only if the key is still absent and no write
// to it (Put, Delete, Update, a batch) came after the miss: every write
// calls Invalidate before it takes the write lock, and the store checks
// under that lock (fill.Store), so a load never overwrites or brings back
// what a user wrote meanwhile.

// ErrNoData is what a Loader returns when the source has no data for a
// key (see fill.ErrNoData).
var ErrNoData = fill.ErrNoData

// startFill starts the fill queue if a Loader is configured.
func (db *DB) startFill() error {
	if db.opts.Loader == nil {
		return nil
	}
	q, err := fill.New(db.opts.Loader, db.fillStore, db.opts.Fill)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	db.fill = q
	return nil
}

// stopFill closes the fill queue before Close stops the database: the
// loads in flight get their load timeout to finish and be stored; a
// Loader that ignores its context is not waited for past that.
func (db *DB) stopFill() {
	if db.fill == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), db.fill.Options().Timeout+100*time.Millisecond)
	defer cancel()
	if err := db.fill.Close(ctx); err != nil && !errors.Is(err, fill.ErrClosed) {
		db.opts.Logger.Warn("marlin: fill queue: loads still running at close", "err", err)
	}
}

// missed queues key (canonical) after a read found nothing.
func (db *DB) missed(key []byte, err error) {
	if db.fill != nil && errors.Is(err, ErrNotFound) {
		db.fill.Miss(key)
	}
}

// invalidate tells the fill queue that key (canonical) is being written.
// It must come before the write takes db.mu.
func (db *DB) invalidate(key []byte) {
	if db.fill != nil {
		db.fill.Invalidate(key)
	}
}

// fillStore is the fill queue's Store: it writes value under key only if
// the key is absent and valid() holds, checked under the write lock.
func (db *DB) fillStore(key, value []byte, ttl time.Duration, valid func() bool) (bool, error) {
	stored := false
	_, err := db.update(key, func(_ []byte, _ Item, found bool, _ uint64) (Change, error) {
		stored = false
		if found || !valid() {
			return Change{Op: Keep}, nil
		}
		stored = true
		c := Change{Op: Set, Value: value}
		if ttl > 0 {
			c.Expiry = time.UnixMilli(db.now() + max(ttl.Milliseconds(), 1))
		}
		return c, nil
	})
	if err != nil {
		return false, err
	}
	return stored, nil
}
