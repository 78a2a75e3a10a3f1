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

// idFloor is how many segment ids a new segment for the batch must leave
// free: a batch of deletes only may roll into the id reserve, as Delete
// does.
func (b *Batch) idFloor() int {
	for i := range b.ops {
		if b.ops[i].kind != segment.KindDelete {
			return idForPut
		}
	}
	return idForDelete
}

// Write applies the batch atomically. Every operation is checked first;
// if any is invalid nothing is written. The whole batch must fit in one
// segment (ErrBatchTooLarge otherwise).
func (db *DB) Write(b *Batch) error {
	if db.opts.KeyNormalizer != nil {
		nb, err := db.normBatch(b)
		if err != nil {
			return err
		}
		b = nb
	}
	if db.fill != nil {
		for i := range b.ops {
			db.fill.Invalidate(b.key(&b.ops[i]))
		}
	}
	err := db.writeBatch(b)
	if errors.Is(err, ErrFull) && db.reclaimIDs(b.idFloor()) {
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
	p, err := db.planBatch(b, true)
	if err != nil {
		return err
	}
	db.mu.Lock()
	if db.failed != nil {
		db.mu.Unlock()
		return db.failed
	}
	_, err = db.writeBatchLocked(b, p)
	return err
}

// batchPlan is what writing a batch needs that is computed without db.mu:
// the checked sizes, the commit record and the keys' hashes.
type batchPlan struct {
	total  int // bytes of the puts' records and the commit record (tombstones are sized under db.mu)
	commit segment.Record
	hashes []uint64
	// dup[i]: another operation of the batch has op i's hash (the same
	// key, or a 64-bit hash twin); repeated[i]: an earlier one does. Only
	// these need the per-key bookkeeping of writeBatchLocked (the entered
	// map, a second probe).
	dup, repeated []bool
}

// planBatch checks every operation of b (a non-empty batch) and hashes
// its keys. With stamp, each operation's expiry is stamped from its TTL
// now (Write); without, the expiries already set are kept (Txn, which
// takes absolute expiries).
func (db *DB) planBatch(b *Batch, stamp bool) (batchPlan, error) {
	var p batchPlan
	for i := range b.ops {
		op := &b.ops[i]
		if stamp {
			op.expiry = 0
			if op.ttl != 0 {
				var err error
				if op.expiry, err = db.expiryFor(op.ttl); err != nil {
					return p, fmt.Errorf("batch op %d: %w", i, err)
				}
			}
		}
		if err := db.checkKV(b.key(op), b.value(op), db.opts.MaxKeySize); err != nil {
			return p, fmt.Errorf("batch op %d: %w", i, err)
		}
		if op.kind != segment.KindDelete {
			p.total += segment.Size(op.klen, op.vlen, op.expiry != 0)
		}
	}
	p.commit = segment.Record{Kind: segment.KindBatchCommit, Value: segment.EncodeCommit(len(b.ops))}
	p.total += segment.Size(0, len(p.commit.Value), false)

	// Hash the whole batch first; writeBatchLocked then touches every
	// key's index slot in one pass so that its walks find them in cache
	// (index.Prefetch).
	p.hashes = make([]uint64, len(b.ops))
	for i := range b.ops {
		p.hashes[i] = db.hash(b.key(&b.ops[i]))
	}
	p.dup, p.repeated = batchDups(p.hashes)
	return p, nil
}

// writeBatchLocked writes the planned batch b as one atomic group of
// records and applies it to the index. db.mu must be held (and the
// handle not failed); it is released in every case. It returns the
// sequence number of the batch's first operation.
func (db *DB) writeBatchLocked(b *Batch, p batchPlan) (uint64, error) {
	total, commit, hashes, dup, repeated := p.total, p.commit, p.hashes, p.dup, p.repeated
	first := db.nextSeq
	b, total = db.maskBatchLocked(b, total)
	db.ix.Prefetch(hashes)
	// Look up every delete's key before writing anything: its tombstone's
	// size depends on what it shadows, and a key whose index candidates
	// include a record that cannot be read refuses the batch (see
	// probeLocked). Puts are looked up below, in the same index walk that
	// inserts a new key. db.mu keeps every other writer out meanwhile.
	olds := make([]entry, len(b.ops))
	for i := range b.ops {
		if b.ops[i].kind != segment.KindDelete {
			continue
		}
		var err error
		if olds[i], err = db.probeLocked(hashes[i], b.key(&b.ops[i])); err != nil {
			db.mu.Unlock()
			return 0, fmt.Errorf("batch op %d: %w", i, err)
		}
	}
	// What each tombstone shadows (tombstone.go), and so its exact size:
	// the key's record found before the batch, or, when an earlier
	// operation of the batch may have changed the key, the segment the
	// batch lands in, bounded by db.nextGen (a roll below may start it; a
	// larger shadow only keeps the tombstone longer).
	shadows := make([]uint64, len(b.ops))
	for i := range b.ops {
		op := &b.ops[i]
		if op.kind != segment.KindDelete {
			continue
		}
		switch {
		case repeated[i]:
			shadows[i] = db.nextGen
		case olds[i].found:
			shadows[i] = db.shadowOfLocked(olds[i].loc)
		default:
			shadows[i] = db.absentShadowLocked() // an evicted key (evict.go)
		}
		total += segment.Size(op.klen, len(tombValue(shadows[i])), false)
	}
	// Roll first if needed, so that the whole batch lands in one segment.
	db.idFloor = b.idFloor()
	err := db.ensureRoomLocked(int64(total))
	db.idFloor = idForPut
	if err != nil {
		db.mu.Unlock()
		return 0, err
	}
	// If the batch (and a sync mark) fits in the write buffer but not in
	// its free room, flush now: a flush that fails (a full disk) then
	// fails the batch before any of it is appended, and the handle stays
	// usable. Only a batch larger than the buffer still flushes midway,
	// where a failure must fail the handle (below).
	if room := len(db.tail.buf) - int(db.tail.n.Load()); total+syncMarkMax <= len(db.tail.buf) && total+syncMarkMax > room {
		if err := db.flushLocked(); err != nil {
			db.mu.Unlock()
			return 0, err
		}
	}
	// The records go back to back from the tail's end: the room is made
	// (above), and the only sync mark the batch may carry is written now,
	// before them (appendBatchLocked writes none), so their locations are
	// known before anything is appended.
	if db.tail.n.Load() == 0 {
		db.markLocked(int64(total))
	}
	recs := make([]segment.Record, len(b.ops))
	locs := make([]uint64, len(b.ops))
	sizes := make([]int, len(b.ops))
	off := db.tail.start + db.tail.n.Load()
	for i := range b.ops {
		op := &b.ops[i]
		recs[i] = segment.Record{Kind: op.kind, Flags: segment.FlagBatch, Seq: db.nextSeq + uint64(i),
			Expiry: op.expiry, Key: b.key(op), Value: b.value(op)}
		if op.kind == segment.KindDelete {
			recs[i].Value = tombValue(shadows[i])
		}
		sizes[i] = segment.Size(op.klen, len(recs[i].Value), op.expiry != 0)
		locs[i] = segment.Loc(db.active.id, off)
		off += int64(sizes[i])
	}
	commit.Seq = db.nextSeq + uint64(len(b.ops)) - 1
	// Each put's key is looked up, and a new key enters the index, in one
	// walk (index.FindOrInsert), before anything is appended, as a single
	// Put's new key does, so that an index error (a full reservation,
	// crafted colliding keys) or an unreadable candidate fails this batch
	// alone: the entries made so far are taken out and nothing was
	// written. Until its record lands, a reader finds a new entry's
	// location past the tail (recordAt: errStale) and treats the key as
	// absent, which it still is; the walks of later operations skip it the
	// same way, so each olds[i] is the key's state before the batch.
	//
	// A key whose hash occurs more than once (dup) is looked up first and
	// enters the index with its first put if it was absent (entered maps it
	// to that operation); the apply loop below looks it up again.
	inserted := make([]bool, len(b.ops))
	var entered map[string]int
	undo := func(i int, err error) (uint64, error) {
		for j := range i {
			if inserted[j] {
				db.ix.DeleteExact(hashes[j], locs[j])
			}
		}
		db.mu.Unlock()
		return 0, fmt.Errorf("batch op %d: %w", i, err)
	}
	for i := range b.ops {
		op := &b.ops[i]
		if op.kind != segment.KindPut {
			continue
		}
		key := b.key(op)
		if !dup[i] {
			old, ins, err := db.findOrInsertLocked(hashes[i], key, locs[i])
			if err != nil {
				return undo(i, err)
			}
			olds[i], inserted[i] = old, ins
			continue
		}
		var err error
		if olds[i], err = db.probeLocked(hashes[i], key); err != nil {
			return undo(i, err)
		}
		if olds[i].found {
			continue
		}
		if entered == nil {
			entered = make(map[string]int)
		}
		if _, ok := entered[string(key)]; ok {
			continue
		}
		if _, _, _, err := db.ix.Put(hashes[i], locs[i], noMatch); err != nil {
			return undo(i, fmt.Errorf("marlin: %w", err))
		}
		inserted[i] = true
		entered[string(key)] = i
	}
	for i := range b.ops {
		if err := db.appendBatchLocked(&recs[i], sizes[i], locs[i]); err != nil {
			db.failLocked(err) // a half-written batch must not be followed by more writes
			db.mu.Unlock()
			return 0, err
		}
	}
	size := segment.Size(0, len(commit.Value), false)
	loc := segment.Loc(db.active.id, off)
	if err := db.appendBatchLocked(&commit, size, loc); err != nil {
		db.failLocked(err)
		db.mu.Unlock()
		return 0, err
	}
	db.nextSeq += uint64(len(b.ops))
	id, _ := segment.SplitLoc(loc)
	db.segs[id].Load().dead.Add(int64(size))
	// Apply in order, so that later operations on a key see earlier ones.
	for i := range b.ops {
		op := &b.ops[i]
		old := olds[i]
		at, ok := -1, false
		if dup[i] {
			at, ok = entered[string(b.key(op))]
		}
		switch {
		case inserted[i]: // its entry is in place already
			old = entry{}
		case ok && at > i:
			// A delete of a key absent before the batch, ahead of the key's
			// first put: the key is absent here, though the put's entry is
			// in the index already.
			old = entry{}
		case repeated[i]: // an earlier operation of the batch may have changed it
			old, _ = db.probeLocked(hashes[i], b.key(op))
		}
		db.st.userBytes.Add(int64(op.klen + op.vlen))
		ins := inserted[i]
		if op.kind == segment.KindPut && !old.found && !ins {
			// The key's entry was deleted by an earlier operation of this
			// batch, so re-inserting it cannot make its shard grow: the
			// shard's fingerprints are a subset of those it held after the
			// inserts above, at the same capacity. It cannot fail; if it
			// did, the batch would be half applied and the handle must fail
			// (reopening replays it).
			if _, _, _, err := db.ix.Put(hashes[i], locs[i], noMatch); err != nil {
				err = fmt.Errorf("marlin: index: %w", err)
				db.failLocked(err)
				db.mu.Unlock()
				return 0, err
			}
			ins = true
		}
		db.applyLocked(hashes[i], op.kind, old, locs[i], sizes[i], ins, shadows[i])
	}
	db.st.batches.Add(1)
	db.st.records.Add(int64(len(b.ops)))
	return first, db.commitLocked(loc, size)
}

// findOrInsertLocked looks key up and, if it is absent, inserts an entry
// for loc, in one index walk: what probeLocked and an insert did in two.
// It returns the key's entry before the call (found set if it was
// present; the entry is then unchanged) and whether it inserted. A
// candidate whose record cannot be read (other than a stale location) is
// an error unless another candidate is the key, as in probeLocked; the
// insert is then taken back. db.mu must be held.
func (db *DB) findOrInsertLocked(h uint64, key []byte, loc uint64) (entry, bool, error) {
	var e entry
	var bad error
	// Called under the shard's lock: recordAt may take tailMu for reading,
	// which no holder of tailMu's write lock waits on a shard lock for
	// (flushes are made under db.mu, which this writer holds).
	oldLoc, found, err := db.ix.FindOrInsert(h, loc, db.matchKey(key, &e, &bad))
	switch {
	case err != nil:
		return e, false, fmt.Errorf("marlin: %w", err)
	case found:
		e.found, e.loc = true, oldLoc
		return e, false, nil
	case bad != nil:
		db.ix.DeleteExact(h, loc)
		return e, false, bad
	}
	return e, true, nil
}

// batchDups reports, for each hash, whether another hash of hs equals it
// (dup) and whether an earlier one does (repeated), with an open-addressed
// table of indexes: the hashes are uniform, so their low bits spread.
func batchDups(hs []uint64) (dup, repeated []bool) {
	dup = make([]bool, len(hs))
	repeated = make([]bool, len(hs))
	size := 1
	for size < 2*len(hs) {
		size <<= 1
	}
	table := make([]int32, size) // index+1 of the first op with a hash; 0: empty
	for i, h := range hs {
		for j := int(h) & (size - 1); ; j = (j + 1) & (size - 1) {
			k := table[j]
			if k == 0 {
				table[j] = int32(i + 1)
				break
			}
			if hs[k-1] == h {
				dup[k-1], dup[i], repeated[i] = true, true, true
				break
			}
		}
	}
	return dup, repeated
}

// appendBatchLocked appends a record of a batch at loc, which must be the
// end of the active segment: the batch's room was made and its sync mark
// written before its locations were computed. Unlike appendLocked it never
// writes a sync mark, which would move the records after it. It flushes
// the buffer first when the record does not fit its free room. db.mu must
// be held.
func (db *DB) appendBatchLocked(rec *segment.Record, size int, loc uint64) error {
	if _, off := segment.SplitLoc(loc); off != db.tail.start+db.tail.n.Load() {
		return fmt.Errorf("marlin: batch record planned at offset %d, tail at %d", off, db.tail.start+db.tail.n.Load())
	}
	if int(db.tail.n.Load())+size > len(db.tail.buf) {
		if err := db.flushLocked(); err != nil {
			return err
		}
	}
	_, off := segment.SplitLoc(loc)
	return db.putRecordLocked(rec, size, off)
}
