// Package keynorm rewrites composite keys to one canonical form, so that
// equivalent requests read and write one entry. A composite key is parts
// joined by a separator, such as "country=in|os=android|model=x"; its
// canonical form has the parts in byte order ("country=in|model=x|
// os=android"), optionally with repeated parts once, empty parts dropped
// (unless kept), and named parts first in a fixed order.
//
// A part may hold the separator if an escape byte is configured: the
// escape byte makes the byte after it literal. The canonical form
// escapes exactly the escape bytes and the bytes at which a separator
// could start, so two spellings of one part are one. Without an escape
// byte a part cannot hold the separator, and, for a separator of more
// than one byte, should not begin or end with part of it: "a|" and "|"
// joined by "||" read back as other parts.
//
// A Normalizer is safe for concurrent use. Append allocates nothing once
// its scratch space (pooled) has grown to the largest key seen.
package keynorm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// MaxKeyLen is the default limit of a canonical key: memcached's 250
// bytes.
const MaxKeyLen = 250

// ErrTooLong: the canonical key is longer than the limit. It is not
// truncated: two different keys must never become one.
var ErrTooLong = errors.New("keynorm: normalized key too long")

// ErrBadEscape: the key ends with an escape byte that escapes nothing.
var ErrBadEscape = errors.New("keynorm: key ends in an escape byte")

// Options configure a Normalizer.
type Options struct {
	// Sep separates parts (one or more bytes; required).
	Sep []byte
	// Escape, if not 0, makes the byte after it literal inside a part.
	Escape byte
	// Dedup keeps one copy of parts that occur more than once.
	Dedup bool
	// KeepEmpty keeps empty parts (by default they are dropped: "a||b"
	// is "a|b").
	KeepEmpty bool
	// First names parts that come first, in this order, before the
	// sorted rest: a part is named N if it starts with N followed by
	// NameSep (or is N). For a tenant or a version that must lead.
	First []string
	// NameSep ends a part's name for First (default '=').
	NameSep byte
	// MaxLen bounds the canonical key (default MaxKeyLen).
	MaxLen int
}

// Normalizer rewrites keys. Its fields are read-only after New.
type Normalizer struct {
	o       Options
	first   [][]byte
	scratch sync.Pool // *work
}

// work is one call's scratch space: the decoded parts and their bytes.
type work struct {
	buf   []byte
	parts []part
}

// part is a decoded part: buf[start:end], and its rank in First (or
// len(First) for the sorted rest).
type part struct {
	start, end int
	rank       int
}

// New returns a Normalizer for o.
func New(o Options) (*Normalizer, error) {
	switch {
	case len(o.Sep) == 0:
		return nil, errors.New("keynorm: empty separator")
	case o.Escape != 0 && bytes.IndexByte(o.Sep, o.Escape) >= 0:
		return nil, fmt.Errorf("keynorm: the escape byte %q is in the separator %q", o.Escape, o.Sep)
	case o.MaxLen < 0:
		return nil, fmt.Errorf("keynorm: negative MaxLen %d", o.MaxLen)
	}
	if o.MaxLen == 0 {
		o.MaxLen = MaxKeyLen
	}
	if o.NameSep == 0 {
		o.NameSep = '='
	}
	o.Sep = bytes.Clone(o.Sep)
	n := &Normalizer{o: o}
	for _, f := range o.First {
		n.first = append(n.first, []byte(f))
	}
	n.scratch.New = func() any { return new(work) }
	return n, nil
}

// Append appends key's canonical form to dst. On an error dst is
// returned unchanged.
func (n *Normalizer) Append(dst, key []byte) ([]byte, error) {
	w := n.scratch.Get().(*work)
	defer n.scratch.Put(w)
	if err := n.split(w, key); err != nil {
		return dst, err
	}
	buf := w.buf
	slices.SortFunc(w.parts, func(a, b part) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return bytes.Compare(buf[a.start:a.end], buf[b.start:b.end])
	})
	start := len(dst)
	for i, p := range w.parts {
		if n.o.Dedup && i > 0 {
			q := w.parts[i-1]
			if bytes.Equal(buf[p.start:p.end], buf[q.start:q.end]) {
				continue
			}
		}
		if i > 0 {
			dst = append(dst, n.o.Sep...)
		}
		dst = n.appendPart(dst, buf[p.start:p.end])
		if len(dst)-start > n.o.MaxLen {
			return dst[:start], fmt.Errorf("%w: over %d bytes", ErrTooLong, n.o.MaxLen)
		}
	}
	return dst, nil
}

// Normalize returns key's canonical form in a new slice.
func (n *Normalizer) Normalize(key []byte) ([]byte, error) {
	return n.Append(nil, key)
}

// split decodes key's parts into w.
func (n *Normalizer) split(w *work, key []byte) error {
	w.buf, w.parts = w.buf[:0], w.parts[:0]
	sep, esc := n.o.Sep, n.o.Escape
	start := 0
	for i := 0; ; {
		if i == len(key) || bytes.HasPrefix(key[i:], sep) {
			if len(w.buf) > start || n.o.KeepEmpty {
				w.parts = append(w.parts, part{start: start, end: len(w.buf), rank: n.rank(w.buf[start:])})
			}
			if i == len(key) {
				return nil
			}
			i += len(sep)
			start = len(w.buf)
			continue
		}
		c := key[i]
		if esc != 0 && c == esc {
			if i+1 == len(key) {
				return ErrBadEscape
			}
			c = key[i+1]
			i++
		}
		w.buf = append(w.buf, c)
		i++
	}
}

// rank is a decoded part's place among First, or len(First).
func (n *Normalizer) rank(p []byte) int {
	for i, f := range n.first {
		if bytes.HasPrefix(p, f) && (len(p) == len(f) || p[len(f)] == n.o.NameSep) {
			return i
		}
	}
	return len(n.first)
}

// appendPart appends a decoded part, escaped: the escape byte, and each
// byte at which the separator could start, within the part or running
// on into the separator that may follow it (a part's form must not
// depend on its place, which the sort decides).
func (n *Normalizer) appendPart(dst, p []byte) []byte {
	esc, sep := n.o.Escape, n.o.Sep
	if esc == 0 {
		return append(dst, p...)
	}
	for i, c := range p {
		if c == esc || bytes.HasPrefix(p[i:], sep) || bytes.HasPrefix(sep, p[i:]) {
			dst = append(dst, esc)
		}
		dst = append(dst, c)
	}
	return dst
}
