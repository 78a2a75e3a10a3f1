package engine

import (
	"bytes"
	"errors"
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
// locations the index gave, in order, and the entry found (if any), as
// probeLocked would have them (a stale candidate is not the key; an
// unreadable one is skipped). valid is false when the answer cannot be
// reused (too many candidates, or a memory fault): the locked probe
// decides then. bad is the first read error met, at badLoc (kept even if
// the lock-free walk was retried and a second read of badLoc succeeded).
type coldProbe struct {
	valid  bool
	n      int
	cands  [maxColdCands]uint64
	e      entry
	bad    error
	badLoc uint64
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
			if !errors.Is(err, errStale) && p.bad == nil {
				p.bad, p.badLoc = err, loc
			}
			return false
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

// probeAfterCold is probeLocked for a write that may have probed first
// without db.mu (p; zero if it did not): it uses p's answer if the index
// still gives the key the same candidates (validateLocked), else probes
// again. A read error p met is returned if the key was not found and the
// unreadable location is still one of the key's entries: the rule of
// lookup, and of probeLocked, which does not write over a record it cannot
// read (and a transient error is reported, not hidden by a second read
// that worked). db.mu must be held.
func (db *DB) probeAfterCold(h uint64, key []byte, p *coldProbe) (entry, error) {
	e, ok := db.validateLocked(h, p)
	var err error
	if !ok {
		e, err = db.probeLocked(h, key)
	}
	if err == nil && !e.found && p.bad != nil && db.ix.Lookup(h, func(l uint64) bool { return l == p.badLoc }) {
		err = p.bad
	}
	return e, err
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
