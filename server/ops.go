package server

import (
	"errors"
	"strconv"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// The item operations every protocol runs: the text, binary and meta
// commands parse their own syntax into these requests and render the
// outcome in their own reply format. Each runs through Server.update, so
// the checks memcached makes against the current item (add, replace, CAS,
// append, incr) and the write happen with no other write in between.

// storeMode is what a storage request does with an existing item.
type storeMode int

const (
	modeSet storeMode = iota
	modeAdd
	modeReplace
	modeAppend
	modePrepend
)

// storeOutcome is a storage request's result.
type storeOutcome int

const (
	stored storeOutcome = iota
	notStored
	exists
	notFound
)

// storeReq is one storage request.
type storeReq struct {
	mode   storeMode
	flags  uint32
	bits   uint8 // a new item's header bits (bitBinKey)
	expiry time.Time
	// casCheck: the item must exist with CAS cas (text cas, binary CAS,
	// meta C). For append and prepend a missing item is notStored and a
	// different CAS is exists; add ignores it (as memcached).
	casCheck bool
	cas      uint64
	// invalidate (meta I, with casCheck): a cas lower than the item's
	// stores the data anyway, marked stale, keeping the item's expiry.
	invalidate bool
	// newCas (meta E): the CAS the stored item gets instead of the write's
	// sequence number.
	hasNewCas bool
	newCas    uint64
	// vivify (meta N in append/prepend mode): a missing item is created
	// from the data, expiring at vivifyExpiry.
	vivify       bool
	vivifyExpiry time.Time
}

// storeResult is what a storage request did: the new item's CAS and
// data length when stored.
type storeResult struct {
	out  storeOutcome
	cas  uint64
	size int
}

var errTooLarge = errors.New("object too large for cache")

// store runs a storage request for key with data.
func (s *Server) store(key []byte, r *storeReq, data []byte) (storeResult, error) {
	var res storeResult
	hint := data // what a set, add or replace stores after the header
	if r.mode == modeAppend || r.mode == modePrepend {
		hint = nil
	}
	err := s.updateHint(key, hint, func(cur *curItem, next uint64) (engine.Change, error) {
		res = storeResult{out: stored}
		cas := next
		if r.hasNewCas {
			cas = r.newCas
		}
		h := itemHdr{flags: r.flags, cas: cas, bits: r.bits}
		expiry := r.expiry
		if !cur.found {
			switch {
			case r.mode == modeAdd:
			case (r.mode == modeAppend || r.mode == modePrepend) && r.vivify:
				expiry = r.vivifyExpiry
			case r.casCheck && r.mode != modeAppend && r.mode != modePrepend:
				res.out = notFound
				return engine.Change{Op: engine.Keep}, nil
			case r.mode == modeSet:
			default:
				res.out = notStored
				return engine.Change{Op: engine.Keep}, nil
			}
			res.cas, res.size = cas, len(data)
			return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(data))), h, data), Expiry: expiry}, nil
		}
		if r.mode == modeAdd {
			res.out = notStored
			return engine.Change{Op: engine.Keep}, nil
		}
		if r.casCheck && cur.hdr.cas != r.cas {
			if !r.invalidate || r.cas > cur.hdr.cas || r.mode == modeAppend || r.mode == modePrepend {
				res.out = exists
				return engine.Change{Op: engine.Keep}, nil
			}
			// A late writer with an older version: store it, stale.
			h.bits |= bitStale | cur.hdr.bits&bitWon
			expiry = cur.expiry
		}
		if r.mode == modeAppend || r.mode == modePrepend {
			// The item keeps its flags and expiry; only the data grows.
			if len(cur.data)+len(data) > s.cfg.MaxItemSize {
				return engine.Change{}, errTooLarge
			}
			h = itemHdr{flags: cur.hdr.flags, cas: cas, bits: cur.hdr.bits & bitBinKey}
			nv := make([]byte, 0, itemSize(h, len(cur.data)+len(data)))
			if r.mode == modeAppend {
				nv = append(appendItem(nv, h, cur.data), data...)
			} else {
				nv = append(appendItem(nv, h, data), cur.data...)
			}
			res.cas, res.size = cas, len(cur.data)+len(data)
			return engine.Change{Op: engine.Set, Value: nv, Expiry: cur.expiry}, nil
		}
		res.cas, res.size = cas, len(data)
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(data))), h, data), Expiry: expiry}, nil
	})
	return res, err
}

// touch sets key's expiry, keeping its data, flags and CAS (as memcached's
// touch and gat), and returns the item's header and a copy of its data
// appended to dst. ErrNotFound if absent.
func (s *Server) touch(dst, key []byte, expiry time.Time) ([]byte, itemHdr, error) {
	var h itemHdr
	found := false
	err := s.update(key, func(cur *curItem, _ uint64) (engine.Change, error) {
		if found = cur.found; !found {
			return engine.Change{Op: engine.Keep}, nil
		}
		h, dst = cur.hdr, append(dst, cur.data...)
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(cur.data))), h, cur.data), Expiry: expiry}, nil
	})
	if err == nil && !found {
		err = engine.ErrNotFound
	}
	return dst, h, err
}

// deleteOutcome is a delete request's result.
type deleteOutcome int

const (
	deleted deleteOutcome = iota
	deleteNotFound
	deleteExists
)

// deleteReq is one delete request.
type deleteReq struct {
	casCheck bool // the item's CAS must be cas
	cas      uint64
	// invalidate (meta I): instead of removing the item, mark it stale
	// with a new CAS (newCas if hasNewCas), clear its win mark, and set
	// its expiry to expiry if hasExpiry.
	invalidate bool
	hasNewCas  bool
	newCas     uint64
	hasExpiry  bool
	expiry     time.Time
}

func (s *Server) delete(key []byte, r *deleteReq) (deleteOutcome, error) {
	var out deleteOutcome
	err := s.update(key, func(cur *curItem, next uint64) (engine.Change, error) {
		switch {
		case !cur.found:
			out = deleteNotFound
			return engine.Change{Op: engine.Keep}, nil
		case r.casCheck && cur.hdr.cas != r.cas:
			out = deleteExists
			return engine.Change{Op: engine.Keep}, nil
		}
		out = deleted
		if !r.invalidate {
			return engine.Change{Op: engine.Remove}, nil
		}
		h := cur.hdr
		h.cas = next
		if r.hasNewCas {
			h.cas = r.newCas
		}
		h.bits = h.bits&^bitWon | bitStale
		expiry := cur.expiry
		if r.hasExpiry {
			expiry = r.expiry
		}
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(cur.data))), h, cur.data), Expiry: expiry}, nil
	})
	return out, err
}

// arithOutcome is an incr/decr request's result.
type arithOutcome int

const (
	arithDone arithOutcome = iota
	arithNotFound
	arithExists
	arithNonNumeric
	arithCreated
)

// arithReq is one incr/decr request.
type arithReq struct {
	incr     bool
	delta    uint64
	casCheck bool
	cas      uint64
	// create: a missing counter is created holding initial, expiring at
	// createExpiry (binary incr; meta N and J).
	create       bool
	initial      uint64
	createExpiry time.Time
	// hasExpiry: a changed counter gets expiry (meta T).
	hasExpiry bool
	expiry    time.Time
	hasNewCas bool // meta E
	newCas    uint64
}

// arithResult is the counter's new value, CAS and expiry, and the
// expiry it had.
type arithResult struct {
	out       arithOutcome
	value     uint64
	cas       uint64
	expiry    time.Time
	oldExpiry time.Time
}

// arith runs incr or decr: the item's data must be a decimal number as
// memcached reads it (parseCounter); incr wraps at 2^64, decr stops at 0.
// As in memcached, a result no longer than the old data replaces it
// padded with spaces to the same length; a longer one replaces it. The
// item keeps its flags and expiry and gets a new CAS.
func (s *Server) arith(key []byte, r *arithReq) (arithResult, error) {
	var res arithResult
	err := s.update(key, func(cur *curItem, next uint64) (engine.Change, error) {
		cas := next
		if r.hasNewCas {
			cas = r.newCas
		}
		if !cur.found {
			if !r.create {
				res = arithResult{out: arithNotFound}
				return engine.Change{Op: engine.Keep}, nil
			}
			res = arithResult{out: arithCreated, value: r.initial, cas: cas, expiry: r.createExpiry}
			nv := appendItem(make([]byte, 0, itemHeader+maxNumLen), itemHdr{cas: cas}, nil)
			return engine.Change{Op: engine.Set, Value: strconv.AppendUint(nv, r.initial, 10), Expiry: r.createExpiry}, nil
		}
		if r.casCheck && cur.hdr.cas != r.cas {
			res = arithResult{out: arithExists}
			return engine.Change{Op: engine.Keep}, nil
		}
		n, ok := parseCounter(cur.data)
		if !ok {
			res = arithResult{out: arithNonNumeric}
			return engine.Change{Op: engine.Keep}, nil
		}
		switch {
		case r.incr:
			n += r.delta
		case r.delta > n:
			n = 0
		default:
			n -= r.delta
		}
		expiry := cur.expiry
		if r.hasExpiry {
			expiry = r.expiry
		}
		res = arithResult{out: arithDone, value: n, cas: cas, expiry: expiry, oldExpiry: cur.expiry}
		h := itemHdr{flags: cur.hdr.flags, cas: cas}
		nv := appendItem(make([]byte, 0, itemHeader+max(len(cur.data), maxNumLen)), h, nil)
		start := len(nv)
		nv = strconv.AppendUint(nv, n, 10)
		for len(nv)-start < len(cur.data) {
			nv = append(nv, ' ')
		}
		return engine.Change{Op: engine.Set, Value: nv, Expiry: expiry}, nil
	})
	return res, err
}

// maxNumLen: a counter is a decimal uint64 of at most 20 digits.
const maxNumLen = 20

// parseCounter reads an item's data as memcached's incr does (strtoull on
// the data followed by its CRLF): optional leading white space, an
// optional sign, decimal digits, then white space, a NUL or the end. A
// value over 2^64-1 or a negative one is not a number. A zero-length item
// is not a number.
func parseCounter(data []byte) (uint64, bool) {
	i := 0
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	neg := false
	if i < len(data) && (data[i] == '+' || data[i] == '-') {
		neg = data[i] == '-'
		i++
	}
	start := i
	var n uint64
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		d := uint64(data[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
		i++
	}
	if i == start || len(data) == 0 {
		return 0, false
	}
	if i < len(data) && !isSpace(data[i]) && data[i] != 0 {
		return 0, false
	}
	if neg {
		n = -n // strtoull negates, wrapping
	}
	if int64(n) < 0 && hasMinus(data) {
		return 0, false // memcached refuses what looks negative
	}
	return n, true
}

func isSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

func hasMinus(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return false
		}
		if c == '-' {
			return true
		}
	}
	return false
}

// countCas counts a CAS-checked store as memcached does.
func (st *stats) countCas(out storeOutcome) {
	switch out {
	case stored:
		st.casHits.Add(1)
	case exists:
		st.casBadval.Add(1)
	case notFound:
		st.casMisses.Add(1)
	}
}

// countArith counts an incr or decr by its outcome.
func (st *stats) countArith(incr bool, out arithOutcome) {
	hits, misses := &st.incrHits, &st.incrMisses
	if !incr {
		hits, misses = &st.decrHits, &st.decrMisses
	}
	switch out {
	case arithDone:
		hits.Add(1)
	case arithNotFound, arithCreated:
		misses.Add(1)
	}
}
