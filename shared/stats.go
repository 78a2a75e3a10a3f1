package shared

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/marlinkv/marlin/engine"
)

// Stats are the store's figures. They are kept by the transactions that
// change them, so they are exact across crashes. A key with an expiry
// counts (with its reference and the bytes it stands for) until its
// expiry bucket ends, less than an eighth of its TTL (or about a second)
// after the key itself: nothing is written when a key expires (grid.go).
type Stats struct {
	Keys         int64 // user keys, inline or shared
	Refs         int64 // keys whose value's data is shared
	Values       int64 // shared values stored (each once)
	StoredBytes  int64 // bytes of the shared values' data, each counted once
	LogicalBytes int64 // bytes of the shared data counted once per key that refers to it
	BytesSaved   int64 // LogicalBytes - StoredBytes
	// KeysPerValue is Refs / Values (0 without values).
	KeysPerValue float64
}

// Stats returns the store's figures. It reads the bucket records that
// may still count (the no-expiry one and, for each step size ever used,
// at most 17 more) in one transaction, so the figures are consistent.
func (s *Store) Stats() (Stats, error) {
	var t totals
	read := func(get func([]byte) ([]byte, bool, error), now int64) error {
		t = totals{}
		raw, found, err := get(bucketKey(0))
		if err != nil {
			return err
		}
		var perm totals
		if found {
			if perm, err = decodeTotals(raw); err != nil {
				return err
			}
		}
		t.addTo(perm)
		for _, g := range candidates(now, perm.levels)[1:] {
			raw, found, err := get(bucketKey(g))
			if err != nil || !found {
				if err != nil {
					return err
				}
				continue
			}
			b, err := decodeTotals(raw)
			if err != nil {
				return err
			}
			t.addTo(b)
		}
		return nil
	}
	var err error
	if s.ro {
		// Nothing writes a read-only database: plain reads are consistent.
		now := s.db.Now().UnixMilli()
		err = read(func(k []byte) ([]byte, bool, error) { return getFound(s.db, k) }, now)
	} else {
		_, err = s.db.Txn(func(tx *engine.Tx) error {
			return read(func(k []byte) ([]byte, bool, error) {
				v, _, found, err := tx.Get(k)
				return v, found, err
			}, tx.Now().UnixMilli())
		})
	}
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Keys: t.keys, Refs: t.refs, Values: t.values, StoredBytes: t.stored,
		LogicalBytes: t.logical, BytesSaved: t.logical - t.stored}
	if t.values > 0 {
		st.KeysPerValue = float64(t.refs) / float64(t.values)
	}
	return st, nil
}

func getFound(db *engine.DB, key []byte) ([]byte, bool, error) {
	v, err := db.Get(key)
	switch {
	case err == nil:
		return v, true, nil
	case isNotFound(err):
		return nil, false, nil
	}
	return nil, false, err
}

// Report is what Check found.
type Report struct {
	Keys, Refs, Values int64    // user keys, references and values seen
	Problems           []string // everything found wrong; none means the store is sound
}

// OK reports whether Check found nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds Report.Problems.
const maxProblems = 100

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Check walks every record and checks the store's invariants: every
// reference's value and meta records are stored, expire no earlier than
// the key, and hold data of the right hash and size; no value is stored
// for good that nothing counts; the counts without expiry are exact, and each
// expiry bucket's count is at least the live keys in it (a key that
// expired still counts until its bucket ends); the totals match what
// the walk saw in the same way. It reads the whole database and is
// meant for tests and offline checks: on a database being written, a
// write during the walk can show up as a problem.
func (s *Store) Check() (Report, error) {
	var rep Report
	now := s.db.Now().UnixMilli()
	type seen struct {
		perm    int64
		buckets map[int64]int64
		maxExp  int64 // latest expiry of a key that refers to it (-1: one has none)
	}
	refs := map[hash]*seen{}
	metas := map[hash]meta{}
	metaExp := map[hash]int64{}
	values := map[hash]int64{} // hash -> value record expiry
	buckets := map[int64]totals{}
	byBucket := map[int64]*totals{} // what the walk counts, by bucket
	var walkedLogical int64
	bt := func(g int64) *totals {
		if byBucket[g] == nil {
			byBucket[g] = &totals{}
		}
		return byBucket[g]
	}
	it := s.db.NewIterator()
	defer it.Close()
	for it.Next() {
		k, v, exp := it.Key(), it.Value(), expiryMs(it.Item().Expiry)
		if !IsReserved(k) {
			r, err := parseKeyRec(v)
			if err != nil {
				rep.problem("key %q: %v", k, err)
				continue
			}
			rep.Keys++
			g := bucketOf(exp, r.level)
			bt(g).keys++
			if !r.ref {
				continue
			}
			rep.Refs++
			bt(g).refs++
			sn := refs[r.h]
			if sn == nil {
				sn = &seen{buckets: map[int64]int64{}}
				refs[r.h] = sn
			}
			switch {
			case exp == 0:
				sn.perm++
				sn.maxExp = -1
			default:
				sn.buckets[g]++
				if sn.maxExp >= 0 {
					sn.maxExp = max(sn.maxExp, exp)
				}
			}
			continue
		}
		rest := k[len(Reserved):]
		var h hash
		if len(rest) == 1+len(h) {
			copy(h[:], rest[1:])
		}
		switch {
		case len(rest) == 1+len(h) && rest[0] == kindValue:
			if hashOf(v) != h {
				rep.problem("value %x: data does not hash to its key", h)
			}
			values[h] = exp
			rep.Values++
		case len(rest) == 1+len(h) && rest[0] == kindMeta:
			m, err := decodeMeta(v)
			if err != nil {
				rep.problem("meta %x: %v", h, err)
				continue
			}
			m.prune(now)
			metas[h], metaExp[h] = m, exp
		case len(rest) == 9 && rest[0] == kindBucket:
			t, err := decodeTotals(v)
			if err != nil {
				rep.problem("bucket record %x: %v", rest[1:], err)
				continue
			}
			buckets[int64(binary.BigEndian.Uint64(rest[1:]))] = t
		case bytes.Equal(k, formatKey()):
		default:
			rep.problem("unknown internal record %q", k)
		}
	}
	if err := it.Err(); err != nil {
		return rep, err
	}
	for h, sn := range refs {
		m, ok := metas[h]
		vexp, vok := values[h]
		if !ok || !vok {
			rep.problem("value %x: referred to by %d keys, meta stored %v, value stored %v", h, sn.perm+sumCounts(sn.buckets), ok, vok)
			continue
		}
		if m.perm != sn.perm {
			rep.problem("value %x: meta counts %d keys without expiry, %d seen", h, m.perm, sn.perm)
		}
		for g, n := range sn.buckets {
			if c := bucketCount0(m.buckets, g); c < n {
				rep.problem("value %x: meta counts %d keys in bucket %d, %d seen", h, c, g, n)
			}
		}
		switch {
		case sn.maxExp < 0 && vexp != 0:
			rep.problem("value %x: expires at %d though a key without expiry refers to it", h, vexp)
		case sn.maxExp > 0 && vexp != 0 && vexp < sn.maxExp:
			rep.problem("value %x: expires at %d before a key that refers to it (%d)", h, vexp, sn.maxExp)
		}
		walkedLogical += m.size * (sn.perm + sumCounts(sn.buckets))
	}
	for h, m := range metas {
		vexp, ok := values[h]
		switch {
		case !ok:
			rep.problem("meta %x: no value record", h)
			continue
		case metaExp[h] != vexp || m.vexp != vexp:
			rep.problem("meta %x: expiry %d, its value's %d, recorded %d", h, metaExp[h], vexp, m.vexp)
		case m.live(now) == 0 && vexp == 0:
			// With none counted, it must expire by itself (an expiry kept
			// from a reference deleted since is allowed: bounded).
			rep.problem("value %x: stored for good with no reference counted", h)
		}
		bt(vexp).values++
		bt(vexp).stored += m.size
	}
	for h := range values {
		if _, ok := metas[h]; !ok {
			rep.problem("value %x: no meta record", h)
		}
	}
	// Totals: the no-expiry bucket exactly; each other bucket at least
	// what the walk saw in it. Logical bytes are compared in sum (the
	// walk sees a value's size once, not per key's bucket).
	for _, g := range slices.Sorted(maps.Keys(byBucket)) {
		w, t := *byBucket[g], buckets[g]
		exact := g == 0
		cmp := func(name string, want, got int64) {
			if exact && got != want || !exact && got < want {
				rep.problem("bucket %d: %s %d, walk saw %d", g, name, got, want)
			}
		}
		cmp("keys", w.keys, t.keys)
		cmp("refs", w.refs, t.refs)
		cmp("values", w.values, t.values)
		cmp("stored bytes", w.stored, t.stored)
	}
	var all totals
	for g, t := range buckets {
		if t.keys < 0 || t.refs < 0 || t.values < 0 || t.stored < 0 || t.logical < 0 {
			rep.problem("bucket %d: negative count %+v", g, t)
		}
		all.addTo(t)
	}
	if all.logical < walkedLogical {
		rep.problem("logical bytes %d, walk saw %d", all.logical, walkedLogical)
	}
	return rep, nil
}

func sumCounts(m map[int64]int64) int64 {
	var n int64
	for _, c := range m {
		n += c
	}
	return n
}

func bucketCount0(bs []bucketCount, g int64) int64 {
	for _, b := range bs {
		if b.g == g {
			return b.n
		}
	}
	return 0
}

func isNotFound(err error) bool { return errors.Is(err, engine.ErrNotFound) }
