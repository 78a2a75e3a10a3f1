package engine

import "time"

// WriteOptions adjust one write (as Pebble's do).
type WriteOptions struct {
	// Sync makes the write durable before it returns, whatever the
	// database's sync mode: under SyncPeriodic or SyncNone a write with
	// Sync is followed by Sync (an fsync of the active segment, which
	// also makes every write before it durable). Under SyncGroup and
	// SyncAlways every write is durable on return anyway.
	Sync bool
	// TTL, if positive, is the written value's time to live (PutWith
	// only; 0: no expiry).
	TTL time.Duration
}

// PutWith is Put (PutTTL with o.TTL) with write options.
func (db *DB) PutWith(key, value []byte, o WriteOptions) error {
	var err error
	if o.TTL != 0 {
		err = db.PutTTL(key, value, o.TTL)
	} else {
		err = db.Put(key, value)
	}
	return db.afterWrite(err, o)
}

// DeleteWith is Delete with write options.
func (db *DB) DeleteWith(key []byte, o WriteOptions) error {
	return db.afterWrite(db.Delete(key), o)
}

// WriteWith is Write with write options (o.TTL does not apply: a batch
// carries its own TTLs).
func (db *DB) WriteWith(b *Batch, o WriteOptions) error {
	if o.TTL != 0 {
		return ErrBadTTL
	}
	return db.afterWrite(db.Write(b), o)
}

// afterWrite makes a successful write durable when o asks for it and the
// sync mode has not already.
func (db *DB) afterWrite(err error, o WriteOptions) error {
	if err != nil || !o.Sync || db.opts.Sync == SyncGroup || db.opts.Sync == SyncAlways {
		return err
	}
	return db.Sync()
}
