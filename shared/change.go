package shared

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"github.com/marlinkv/marlin/engine"
)

// change is the work of one store transaction: the references it removes
// and adds, the meta records they touch and the totals they move. It
// lives inside one engine.Txn function (so its reads are consistent and
// its writes commit together) and is dropped when that returns.
//
// Writes go in a fixed order: the user key's record first (so its
// sequence number is tx.Next(), the CAS a server stored in the value),
// then value and meta records, then bucket records.
type change struct {
	s      *Store
	tx     *engine.Tx
	now    int64 // Unix ms, tx.Now()
	metas  map[hash]*metaState
	order  []hash // metas in the order first touched
	deltas map[int64]*totals
	levels uint64 // levels used by the references added
	// known are (data, hash) pairs in hand (the old version's data, a
	// caller's hint): a reference to equal data reuses the hash instead
	// of computing it under the write lock.
	known []knownData
}

type knownData struct {
	data []byte
	h    hash
}

// metaState is one shared value's meta record as the change sees it.
type metaState struct {
	m       meta
	existed bool   // the meta record was stored (live) before the change
	oldVexp int64  // its expiry then
	raw     []byte // its bytes then, to skip a rewrite that changes nothing
	data    []byte // the shared data, when the change has it in hand
}

func newChange(s *Store, tx *engine.Tx) *change {
	return &change{s: s, tx: tx, now: tx.Now().UnixMilli(), metas: map[hash]*metaState{}, deltas: map[int64]*totals{}}
}

// readKey reads key's record. found is false if it is absent or expired.
func (c *change) readKey(key []byte) (r keyRec, it engine.Item, found bool, err error) {
	v, it, found, err := c.tx.Get(key)
	if err != nil || !found {
		return r, it, false, err
	}
	r, err = parseKeyRec(v)
	if err != nil {
		return r, it, false, fmt.Errorf("key %q: %w", key, err)
	}
	return r, it, true, nil
}

// value returns the whole value of a key record (a copy owned by the
// caller), reading the shared data if it is a reference.
func (c *change) value(r keyRec) ([]byte, error) {
	if !r.ref {
		return r.value, nil // tx.Get's copy
	}
	data, _, found, err := c.tx.Get(valueKey(r.h))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrDangling
	}
	c.known = append(c.known, knownData{data, r.h})
	return append(r.pre[:len(r.pre):len(r.pre)], data...), nil
}

// meta returns the state of h's meta record, reading it at first use.
func (c *change) meta(h hash) (*metaState, error) {
	if ms, ok := c.metas[h]; ok {
		return ms, nil
	}
	raw, it, found, err := c.tx.Get(metaKey(h))
	if err != nil {
		return nil, err
	}
	ms := &metaState{}
	if found {
		if ms.m, err = decodeMeta(raw); err != nil {
			return nil, err
		}
		ms.m.prune(c.now)
		ms.existed, ms.raw, ms.oldVexp = true, raw, expiryMs(it.Expiry)
	}
	c.metas[h] = ms
	c.order = append(c.order, h)
	return ms, nil
}

func (c *change) delta(g int64) *totals {
	d := c.deltas[g]
	if d == nil {
		d = &totals{}
		c.deltas[g] = d
	}
	return d
}

// unref removes the counts of a key's current record r (with version
// it): the key from its bucket's totals and, for a reference, the
// reference from its value's meta record.
func (c *change) unref(r keyRec, it engine.Item) error {
	g := bucketOf(expiryMs(it.Expiry), r.level)
	d := c.delta(g)
	d.keys--
	if !r.ref {
		return nil
	}
	d.refs--
	ms, err := c.meta(r.h)
	if err != nil {
		return err
	}
	if !ms.existed {
		return nil // a dangling reference (damage): nothing else counted it
	}
	ms.m.add(g, -1)
	d.logical -= ms.m.size
	return nil
}

// ref makes the record of a key that will hold value until e (Unix ms;
// 0: never; else after now) and counts it: the key in its bucket's
// totals and, when the value's data is shared, the reference in the
// data's meta record (new if the data is not stored yet).
func (c *change) ref(value []byte, e int64) (keyRec, error) {
	r := keyRec{value: value}
	if e != 0 {
		r.level = levelFor(c.now, e)
		c.levels |= 1 << r.level
	}
	g := bucketOf(e, r.level)
	d := c.delta(g)
	d.keys++
	p := c.s.prefixLen(value)
	data := value[p:]
	if len(data) < c.s.opts.MinSize {
		return r, nil
	}
	h := c.hashOf(data)
	ms, err := c.meta(h)
	if err != nil {
		return r, err
	}
	if ms.existed && ms.m.size != int64(len(data)) {
		return r, nil // a hash collision, were SHA-256 broken: keep it inline
	}
	if !ms.existed && ms.data == nil {
		ms.m.size = int64(len(data))
	}
	ms.data = data
	ms.m.add(g, 1)
	d.refs++
	d.logical += ms.m.size
	r.ref, r.pre, r.h, r.value = true, value[:p], h, nil
	return r, nil
}

func (c *change) hashOf(data []byte) hash {
	for _, k := range c.known {
		if bytes.Equal(k.data, data) {
			return k.h
		}
	}
	return hashOf(data)
}

// put writes key's record r with expiry e: the change's first write.
func (c *change) put(key []byte, r keyRec, e int64) error {
	return c.tx.Put(key, appendKeyRec(nil, r), expiryTime(e))
}

// finish writes the value, meta and bucket records the change moved.
func (c *change) finish() error {
	for _, h := range c.order {
		if err := c.finishMeta(h, c.metas[h]); err != nil {
			return err
		}
	}
	return c.finishTotals()
}

// finishMeta writes one value's records: deleted with its last
// reference, written with its first, and rewritten when its expiry must
// change (the invariant: never before any key that refers to it).
func (c *change) finishMeta(h hash, ms *metaState) error {
	tx, m := c.tx, &ms.m
	if m.live(c.now) == 0 {
		if ms.existed {
			d := c.delta(ms.oldVexp)
			d.values--
			d.stored -= m.size
			if err := tx.Delete(valueKey(h)); err != nil {
				return err
			}
			return tx.Delete(metaKey(h))
		}
		return nil
	}
	// The value's expiry: none while a key without expiry refers to it;
	// else at least its latest bucket. An expiry already later is kept:
	// shortening it would rewrite the data to save a bounded wait.
	switch {
	case m.perm > 0:
		m.vexp = 0
	case !ms.existed || ms.oldVexp == 0 || ms.oldVexp < m.maxBucket():
		m.vexp = m.maxBucket()
	default:
		m.vexp = ms.oldVexp
	}
	if !ms.existed || m.vexp != ms.oldVexp {
		data := ms.data
		if data == nil {
			var found bool
			var err error
			if data, _, found, err = tx.Get(valueKey(h)); err != nil {
				return err
			}
			if !found {
				// A meta record without its value (damage): drop the meta
				// record; the keys that refer to it read as dangling.
				d := c.delta(ms.oldVexp)
				d.values--
				d.stored -= m.size
				return tx.Delete(metaKey(h))
			}
		}
		if err := tx.Put(valueKey(h), data, expiryTime(m.vexp)); err != nil {
			return err
		}
		if ms.existed {
			d := c.delta(ms.oldVexp)
			d.values--
			d.stored -= m.size
		}
		d := c.delta(m.vexp)
		d.values++
		d.stored += m.size
	}
	enc := m.encode()
	if ms.existed && m.vexp == ms.oldVexp && bytes.Equal(enc, ms.raw) {
		return nil
	}
	return tx.Put(metaKey(h), enc, expiryTime(m.vexp))
}

// finishTotals applies the deltas to the bucket records. A bucket record
// expires with its bucket; the no-expiry one also keeps the levels
// bitmap Stats reads.
func (c *change) finishTotals() error {
	if c.levels != 0 {
		c.delta(0).levels = c.levels
	}
	for _, g := range slices.Sorted(maps.Keys(c.deltas)) {
		d := c.deltas[g]
		if d.zero() {
			continue
		}
		raw, _, found, err := c.tx.Get(bucketKey(g))
		if err != nil {
			return err
		}
		var t totals
		if found {
			if t, err = decodeTotals(raw); err != nil {
				return err
			}
		}
		before := t
		t.addTo(*d)
		switch {
		case t == before:
		case t.zero():
			err = c.tx.Delete(bucketKey(g))
		default:
			err = c.tx.Put(bucketKey(g), t.encode(), expiryTime(g))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// prefixLen is Options.Prefix clamped to [0, len(v)].
func (s *Store) prefixLen(v []byte) int {
	if s.opts.Prefix == nil {
		return 0
	}
	return min(max(s.opts.Prefix(v), 0), len(v))
}
