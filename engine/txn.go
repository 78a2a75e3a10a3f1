package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Transactions: an atomic read-modify-write of several keys. Txn runs its
// function with db.mu held, the lock every index writer holds, so no other
// write comes between the function's reads (Tx.Get) and the commit of its
// writes; the writes are then committed as one batch (writeBatchLocked),
// under the same hold of the lock, so a crash keeps all of them or none.
// It is what Update is for one key, for many: package shared keeps a
// key's record, its value's reference count and the store's totals
// consistent with it.

// ErrTxnDone is returned by the methods of a Tx used after its function
// returned.
var ErrTxnDone = errors.New("marlin: transaction already finished")

// Tx is the handle a Txn function reads and writes through. It is valid
// only while that function runs and is not safe for concurrent use.
type Tx struct {
	db   *DB
	now  int64  // Unix ms: the time every expiry decision of the Txn uses
	next uint64 // sequence number of the first buffered write
	done bool
	err  error // the first failed Put or Delete: the Txn fails with it

	// b holds the buffered writes (keys canonical, expiries absolute);
	// last maps a key to its latest operation in b, for reads of the
	// transaction's own writes.
	b    Batch
	last map[string]int
}

// Txn runs fn and then commits the writes it buffered (Tx.Put,
// Tx.Delete) as one atomic batch: after a crash either all of them are
// visible or none is. fn's reads (Tx.Get) and the commit happen under the
// database's write lock, so no other write comes between them: what fn
// read is still current when its writes land. (Concurrent lock-free
// readers may see some of the writes before others while the commit
// runs, as with Write.)
//
// Txn returns the sequence number of the first buffered write (0 if fn
// buffered none; the others follow it in order) or fn's error, which
// cancels every write. fn may run twice: when the log must first free
// segment ids (ErrFull), the whole transaction is retried after a
// reclaim pass, and only the last run's writes count. All the writes must
// fit in one segment (ErrBatchTooLarge otherwise).
//
// fn runs with the write lock held: it must be quick, and must not call
// any other method of the database that writes (it would wait for the
// lock forever) — read through tx, whose reads are consistent. Reading
// a cold key makes every writer wait for its disk read.
func (db *DB) Txn(fn func(tx *Tx) error) (uint64, error) {
	seq, floor, err := db.txnOnce(fn)
	if errors.Is(err, ErrFull) && floor != 0 && db.reclaimIDs(floor) {
		seq, _, err = db.txnOnce(fn)
	}
	return seq, err
}

// txnOnce runs one attempt of Txn. floor is, when the commit failed, the
// segment-id floor of the writes it tried (for the reclaim pass), else 0.
func (db *DB) txnOnce(fn func(tx *Tx) error) (seq uint64, floor int, err error) {
	if db.opts.ReadOnly {
		return 0, 0, ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return 0, 0, err
	}
	defer db.exit(g)
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return 0, 0, db.failed
	}
	tx := &Tx{db: db, now: db.now(), next: db.nextSeq}
	err = tx.run(fn)
	tx.done = true
	if err == nil {
		err = tx.err
	}
	if err != nil || tx.b.Len() == 0 {
		db.mu.Unlock()
		return 0, 0, err
	}
	p, err := db.planBatch(&tx.b, false)
	if err != nil {
		db.mu.Unlock()
		return 0, 0, err
	}
	seq, err = db.writeBatchLocked(&tx.b, p) // unlocks db.mu
	if err != nil {
		return seq, tx.b.idFloor(), err
	}
	return seq, 0, nil
}

// run calls fn, releasing db.mu if it panics (the panic goes on).
func (tx *Tx) run(fn func(tx *Tx) error) error {
	ok := false
	defer func() {
		if !ok {
			tx.done = true
			tx.db.mu.Unlock()
		}
	}()
	err := fn(tx)
	ok = true
	return err
}

// Now returns the time the transaction judges expiry by (the database's
// clock, read once when the transaction began; see Options.Clock).
func (tx *Tx) Now() time.Time { return time.UnixMilli(tx.now) }

// Next returns the sequence number the transaction's first buffered
// write gets when it commits (a memcached server stores it in the value
// as the item's CAS). The n-th write (from 0) gets Next()+n.
func (tx *Tx) Next() uint64 { return tx.next }

// Get reads key's current version: the transaction's own latest write of
// key if it made one, else the stored version. found is false if the key
// is absent, expired or deleted by the transaction (value is then nil).
// value is a copy owned by the caller. A buffered write's Item carries
// the sequence number and expiry it will commit with.
func (tx *Tx) Get(key []byte) (value []byte, it Item, found bool, err error) {
	if tx.done {
		return nil, it, false, ErrTxnDone
	}
	db := tx.db
	key, kb, err := db.normKey(key)
	if err != nil {
		return nil, it, false, err
	}
	defer putKeyBuf(kb)
	if err := db.checkKV(key, nil, segment.MaxKeyLen); err != nil {
		return nil, it, false, err
	}
	if i, ok := tx.last[string(key)]; ok {
		op := &tx.b.ops[i]
		if op.kind == segment.KindDelete {
			return nil, it, false, nil
		}
		it.Seq = tx.next + uint64(i)
		if op.expiry != 0 {
			it.Expiry = time.UnixMilli(op.expiry)
		}
		return append([]byte(nil), tx.b.value(op)...), it, true, nil
	}
	e, err := db.probeLocked(db.hash(key), key)
	if err == nil && !e.found && db.base.Load() != nil {
		return tx.baseGet(key)
	}
	if err != nil || !e.found {
		return nil, it, false, err
	}
	value, rec, err := db.copyRecordLocked(e.loc)
	if err != nil {
		return nil, it, false, err
	}
	if rec.Expiry != 0 && rec.Expiry <= tx.now {
		return nil, it, false, nil
	}
	it.Seq = rec.Seq
	if rec.Expiry != 0 {
		it.Expiry = time.UnixMilli(rec.Expiry)
	}
	return value, it, true, nil
}

// Put buffers a put of key=value that stops being readable at expiry
// (zero: never). An expiry not after Now stores nothing readable: the
// write is a delete of key instead, as with Update. The key and value
// are checked (and copied) now; an error also fails the Txn, even if fn
// ignores it.
func (tx *Tx) Put(key, value []byte, expiry time.Time) error {
	var exp int64
	if !expiry.IsZero() {
		if exp = expiry.UnixMilli(); exp <= tx.now {
			return tx.Delete(key)
		}
	}
	return tx.add(segment.KindPut, key, value, exp)
}

// Delete buffers a delete of key. As in a Batch, its tombstone is written
// even if the key is absent.
func (tx *Tx) Delete(key []byte) error {
	return tx.add(segment.KindDelete, key, nil, 0)
}

func (tx *Tx) add(kind segment.Kind, key, value []byte, expiry int64) error {
	if tx.done {
		return ErrTxnDone
	}
	db := tx.db
	key, kb, err := db.normKey(key)
	if err == nil {
		defer putKeyBuf(kb)
		err = db.checkKV(key, value, db.opts.MaxKeySize)
	}
	if err != nil {
		err = fmt.Errorf("marlin: txn op %d: %w", tx.b.Len(), err)
		if tx.err == nil {
			tx.err = err
		}
		return err
	}
	// A load of key in flight must not land after this write (fill.go).
	// Invalidate only takes the fill queue's lock, which is taken under
	// db.mu elsewhere too (the fill store's check), never the other way.
	db.invalidate(key)
	if tx.last == nil {
		tx.last = make(map[string]int)
	}
	tx.last[string(key)] = tx.b.Len()
	tx.b.add(kind, key, value, 0)
	tx.b.ops[len(tx.b.ops)-1].expiry = expiry
	return nil
}

// Len returns the number of writes buffered so far.
func (tx *Tx) Len() int { return tx.b.Len() }

// Now returns the time against which the database judges expiry: its
// clock (Options.Clock), never earlier than a time it used before (see
// docs/design.md, Clocks). Layers above the engine that decide expiries
// themselves (package shared) use it to agree with the engine.
func (db *DB) Now() time.Time { return time.UnixMilli(db.now()) }

// Options returns the options the handle was opened with, after
// defaults. Layers above the engine use it to check what they can work
// with (package shared refuses a KeyNormalizer or a Loader).
func (db *DB) Options() Options { return db.opts }
