package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Batch collects puts and deletes that Write applies atomically with
// respect to crashes: after a crash either all of them are visible or none
// is. (Concurrent readers may see some of a batch's keys updated before
// others while Write runs.) A Batch copies what it is given; it is not safe
// for concurrent use and may be reused after Reset.
type Batch struct {
	ops  []batchOp
	data []byte // keys and values, back to back
}

type batchOp struct {
	kind         segment.Kind
	klen, vlen   int
	ttl          time.Duration // 0: no expiry; the expiry is stamped by Write
	expiry       int64         // set by Write from ttl
	keyOff, vOff int
}

// Put adds a put of key=value.
func (b *Batch) Put(key, value []byte) { b.add(segment.KindPut, key, value, 0) }

// PutTTL adds a put that expires ttl after Write applies the batch. A ttl
// that is not positive makes Write fail with ErrBadTTL.
func (b *Batch) PutTTL(key, value []byte, ttl time.Duration) {
	if ttl <= 0 {
		ttl = -1 // keep "no expiry" (0) apart from a bad TTL
	}
	b.add(segment.KindPut, key, value, ttl)
}

// Delete adds a delete of key.
func (b *Batch) Delete(key []byte) { b.add(segment.KindDelete, key, nil, 0) }

func (b *Batch) add(kind segment.Kind, key, value []byte, ttl time.Duration) {
	op := batchOp{kind: kind, klen: len(key), vlen: len(value), ttl: ttl, keyOff: len(b.data)}
	b.data = append(b.data, key...)
	op.vOff = len(b.data)
	b.data = append(b.data, value...)
	b.ops = append(b.ops, op)
}

// Len returns the number of operations in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.ops = b.ops[:0]
	b.data = b.data[:0]
}

// syncMarkMax is the size of the largest sync mark record.
var syncMarkMax = segment.Size(0, len(segment.EncodeSyncMark(segment.MaxSegmentSize)), false)

func (b *Batch) key(op *batchOp) []byte { return b.data[op.keyOff : op.keyOff+op.klen] }
func (b *Batch) value(op *batchOp) []byte {
	return b.data[op.vOff : op.vOff+op.vlen]
}

// Write applies the batch atomically. Every operation is checked first;
// if any is invalid nothing is written. The whole batch must fit in one
// segment (ErrBatchTooLarge otherwise).
func (db *DB) Write(b *Batch) error {
	err := db.writeBatch(b)
	if errors.Is(err, ErrFull) && db.reclaimIDs() {
		err = db.writeBatch(b)
	}
	return err
}

func (db *DB) writeBatch(b *Batch) error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	g, err := db.enter()
	if err != nil {
		return err
	}
	defer db.exit(g)
	if len(b.ops) == 0 {
		return nil
	}
	total := 0
	for i := range b.ops {
		op := &b.ops[i]
		op.expiry = 0
		if op.ttl != 0 {
			if op.expiry, err = db.expiryFor(op.ttl); err != nil {
				return fmt.Errorf("batch op %d: %w", i, err)
			}
		}
		if err := db.checkKV(b.key(op), b.value(op), db.opts.MaxKeySize); err != nil {
			return fmt.Errorf("batch op %d: %w", i, err)
		}
		if op.kind == segment.KindDelete {
			total += segment.Size(op.klen, maxTombValue, false) // an upper bound
		} else {
			total += segment.Size(op.klen, op.vlen, op.expiry != 0)
		}
	}
	commit := segment.Record{Kind: segment.KindBatchCommit, Value: segment.EncodeCommit(len(b.ops))}
	commitSize := segment.Size(0, len(commit.Value), false)
	total += commitSize

	hashes := make([]uint64, len(b.ops))
	for i := range b.ops {
		hashes[i] = db.hash(b.key(&b.ops[i]))
	}
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return db.failed
	}
	// Look every key up before writing anything: a key whose index
	// candidates include a record that cannot be read refuses the batch
	// (see probeLocked). The answers are reused below for keys that occur
	// once in the batch; db.mu keeps every other writer out meanwhile.
	olds := make([]entry, len(b.ops))
	repeated := make([]bool, len(b.ops))
	seen := make(map[uint64]struct{}, len(b.ops))
	for i := range b.ops {
		var err error
		if olds[i], err = db.probeLocked(hashes[i], b.key(&b.ops[i])); err != nil {
			db.mu.Unlock()
			return fmt.Errorf("batch op %d: %w", i, err)
		}
		if _, dup := seen[hashes[i]]; dup {
			repeated[i] = true
		}
		seen[hashes[i]] = struct{}{}
	}
	// Roll first if needed, so that the whole batch lands in one segment.
	// A batch of deletes only may roll into the id reserve, as Delete does.
	onlyDeletes := true
	for i := range b.ops {
		onlyDeletes = onlyDeletes && b.ops[i].kind == segment.KindDelete
	}
	if onlyDeletes {
		db.idFloor = idForDelete
	}
	err = db.ensureRoomLocked(int64(total))
	db.idFloor = idForPut
	if err != nil {
		db.mu.Unlock()
		return err
	}
	// If the batch (and a sync mark) fits in the write buffer but not in
	// its free room, flush now: a flush that fails (a full disk) then
	// fails the batch before any of it is appended, and the handle stays
	// usable. Only a batch larger than the buffer still flushes midway,
	// where a failure must fail the handle (below).
	if room := len(db.tail.buf) - int(db.tail.n.Load()); total+syncMarkMax <= len(db.tail.buf) && total+syncMarkMax > room {
		if err := db.flushLocked(); err != nil {
			db.mu.Unlock()
			return err
		}
	}
	locs := make([]uint64, len(b.ops))
	sizes := make([]int, len(b.ops))
	shadows := make([]uint64, len(b.ops)) // what each tombstone's value records
	remaining := total                    // bytes of the batch not yet appended
	for i := range b.ops {
		op := &b.ops[i]
		rec := segment.Record{Kind: op.kind, Flags: segment.FlagBatch, Seq: db.nextSeq + uint64(i),
			Expiry: op.expiry, Key: b.key(op), Value: b.value(op)}
		if op.kind == segment.KindDelete {
			// What the tombstone shadows (tombstone.go): the key's record
			// found before the batch, or, when an earlier operation of the
			// batch may have changed the key, this segment (a safe bound).
			switch {
			case repeated[i]:
				shadows[i] = db.active.gen
			case olds[i].found:
				shadows[i] = db.shadowOfLocked(olds[i].loc)
			}
			rec.Value = tombValue(shadows[i])
			remaining -= segment.Size(op.klen, maxTombValue, false)
		} else {
			remaining -= segment.Size(op.klen, op.vlen, op.expiry != 0)
		}
		// Reserving the rest keeps a sync mark from pushing the batch's end
		// into a new segment.
		loc, size, err := db.appendLocked(&rec, remaining)
		if err != nil {
			db.failLocked(err) // a half-written batch must not be followed by more writes
			db.mu.Unlock()
			return err
		}
		locs[i], sizes[i] = loc, size
	}
	commit.Seq = db.nextSeq + uint64(len(b.ops)) - 1
	loc, size, err := db.appendLocked(&commit, 0)
	if err != nil {
		db.failLocked(err)
		db.mu.Unlock()
		return err
	}
	db.nextSeq += uint64(len(b.ops))
	id, _ := segment.SplitLoc(loc)
	db.segs[id].Load().dead.Add(int64(size))
	// Apply in order, so that later operations on a key see earlier ones.
	for i := range b.ops {
		op := &b.ops[i]
		old := olds[i]
		if repeated[i] { // an earlier operation of the batch may have changed it
			old, _ = db.probeLocked(hashes[i], b.key(op))
		}
		db.st.userBytes.Add(int64(op.klen + op.vlen))
		inserted := false
		if op.kind == segment.KindPut && !old.found {
			// The records are already in the log, so an index error here
			// (crafted colliding keys, a full reservation) leaves the batch
			// half applied: the handle must fail; reopening replays it.
			if _, _, _, err := db.ix.Put(hashes[i], locs[i], noMatch); err != nil {
				err = fmt.Errorf("marlin: index: %w", err)
				db.failLocked(err)
				db.mu.Unlock()
				return err
			}
			inserted = true
		}
		db.applyLocked(hashes[i], op.kind, old, locs[i], sizes[i], inserted, shadows[i])
	}
	db.st.batches.Add(1)
	db.st.records.Add(int64(len(b.ops)))
	return db.commitLocked(loc, size)
}
