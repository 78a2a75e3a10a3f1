package engine

import (
	"bytes"
	"runtime/debug"

	"github.com/marlinkv/marlin/segment"
)

// Cold updates. An overwrite or delete must know whether (and where) the
// key has an entry: the index stores only fingerprints, so each candidate
// record is read to compare keys. For a key whose old record is not in
// the page cache that read goes to the disk, and done under db.mu it would
// put every cold update in one queue. So writeOne reads the candidates
// first, without the mutex (probeCold), and under the mutex only checks
// that the key's candidates are the same locations as before
// (validateLocked), falling back to the locked probe if anything changed.
//
// Why the check is enough: while an operation is in flight (db.enter) the
// record at a location never changes: records are immutable, and a
// segment's id is reused only after its file is deleted, which waits for
// every operation in flight (opGuard.synchronize in retire.go). The locked
// probe's answer is a function of the candidate locations in slot order
// (it reads each until one holds the key); if, under db.mu, the index
// yields the same locations up to and including the one that held the key
// (or all of them, none holding it), the locked probe would read the same
// records and answer the same. Writers of the index hold db.mu (compaction
// moves entries under it too), so the answer stays true until the write
// is applied, exactly as the locked probe's would.

// maxColdCands bounds the candidates probeCold remembers; a key with more
// fingerprint matches (only crafted collisions) takes the locked probe.
const maxColdCands = 8

// coldProbe is what probeCold learned about a key: the candidate
// locations the index gave, in order, and the entry found (if any).
// valid is false when the answer cannot be reused (a candidate was stale
// or unreadable, or there were too many): the locked probe decides then,
// and reports a read error as it always did.
type coldProbe struct {
	valid bool
	n     int
	cands [maxColdCands]uint64
	e     entry
}

// probeCold probes key's candidates without db.mu, reading records from
// the disk if they are cold (readRecord). A memory fault reading a mapped
// record makes the probe invalid, never a crash.
func (db *DB) probeCold(h uint64, key []byte) (p coldProbe) {
	var err error
	defer func() {
		if err != nil {
			p.valid = false
		}
	}()
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	ok := true
	p.e.found = db.ix.Lookup(h, func(loc uint64) bool {
		if p.n == maxColdCands {
			ok = false
			return true
		}
		p.cands[p.n] = loc
		p.n++
		r, held, err := db.readRecord(loc)
		defer db.unhold(held)
		if err != nil {
			ok = false
			return true
		}
		if !bytes.Equal(r.Key, key) {
			return false
		}
		p.e.loc, p.e.size = loc, segment.Size(len(r.Key), len(r.Value), r.Expiry != 0)
		return true
	})
	p.valid = ok
	return p
}

// validateLocked returns p's entry if the index still gives key's hash h
// the candidates p saw (see the comment at the top of this file); ok is
// false if p is invalid or anything changed. It reads no record. db.mu
// must be held.
func (db *DB) validateLocked(h uint64, p *coldProbe) (e entry, ok bool) {
	if !p.valid {
		return e, false
	}
	i, same := 0, true
	found := db.ix.Lookup(h, func(loc uint64) bool {
		if i >= p.n || p.cands[i] != loc {
			same = false
			return true
		}
		i++
		return p.e.found && loc == p.e.loc
	})
	if !same || i != p.n || found != p.e.found {
		return e, false
	}
	db.cold.reused.Add(1)
	return p.e, true
}
