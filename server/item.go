// Package server serves a Marlin database over memcached's protocols.
package server

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// How an item is stored in the engine. memcached gives every item 32-bit
// client flags and a 64-bit CAS unique that changes with every write of
// the item but not with a touch; both must survive a restart, and so must
// the meta protocol's marks (stale, win token sent, fetched, last access).
// The engine stores bytes, so the server keeps these in a header in front
// of the data:
//
//	+--------------+--------------+----------+------------------+-----------+
//	| flags (4 LE) | cas (8 LE)   | bits (1) | [atime (4 LE)]   | data (n)  |
//	+--------------+--------------+----------+------------------+-----------+
//
// bits: bitStale (md I, ms I), bitWon (a client was sent W), bitFetched
// and bitAtime (atime, the Unix second of the last recorded access,
// present only with bitAtime), bitBinKey (the key was sent in base64,
// so meta replies send it back so). Items without an access record, nearly all
// of them, pay 13 bytes.
//
// The CAS is the engine sequence number of the write that stored the
// data (engine.UpdateFunc's next), unless the client chose it (meta E).
// Whether an item predates a flush_all is decided by the record's own
// sequence number (engine.Item.Seq), not by the CAS, which a client may
// set. A touch rewrites the record with the same header, keeping the CAS,
// as memcached does. A database served this way holds these headers in
// its values.

// itemHeader is the size of the header in front of an item's data,
// without the optional access time.
const itemHeader = 13

// maxItemHeader is the largest header (with the access time).
const maxItemHeader = itemHeader + 4

const (
	bitStale   = 1 << 0
	bitWon     = 1 << 1
	bitFetched = 1 << 2
	bitAtime   = 1 << 3
	bitBinKey  = 1 << 4 // stored by a meta command with a base64 key (b)
	knownBits  = bitStale | bitWon | bitFetched | bitAtime | bitBinKey
)

// itemHdr is an item's header, decoded.
type itemHdr struct {
	flags uint32
	cas   uint64
	bits  uint8
	atime uint32 // Unix seconds; meaningful with bitAtime
}

var errShortItem = errors.New("server: stored value is not an item (short or unknown header)")

// appendItem appends the stored form of an item to dst.
func appendItem(dst []byte, h itemHdr, data []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, h.flags)
	dst = binary.LittleEndian.AppendUint64(dst, h.cas)
	dst = append(dst, h.bits)
	if h.bits&bitAtime != 0 {
		dst = binary.LittleEndian.AppendUint32(dst, h.atime)
	}
	return append(dst, data...)
}

// sinceAccess is the seconds since the item's last recorded fetch (mg l,
// me la): 0 if none was recorded.
func (h itemHdr) sinceAccess(now time.Time) int64 {
	if h.bits&bitAtime == 0 {
		return 0
	}
	return max(now.Unix()-int64(h.atime), 0)
}

// itemSize is the stored size of an item with this header and n bytes of
// data.
func itemSize(h itemHdr, n int) int {
	if h.bits&bitAtime != 0 {
		return itemHeader + 4 + n
	}
	return itemHeader + n
}

// parseItem splits a stored value into its header and data (aliasing v).
func parseItem(v []byte) (itemHdr, []byte, error) {
	if len(v) < itemHeader || v[12]&^knownBits != 0 {
		return itemHdr{}, nil, errShortItem
	}
	h := itemHdr{flags: binary.LittleEndian.Uint32(v), cas: binary.LittleEndian.Uint64(v[4:]), bits: v[12]}
	v = v[itemHeader:]
	if h.bits&bitAtime != 0 {
		if len(v) < 4 {
			return itemHdr{}, nil, errShortItem
		}
		h.atime = binary.LittleEndian.Uint32(v)
		v = v[4:]
	}
	return h, v, nil
}

// curItem is a key's current item as an update sees it. found is false
// if the key is absent, expired or flushed; the rest is then zero.
type curItem struct {
	found  bool
	hdr    itemHdr
	data   []byte // aliases the engine's copy, valid during the update
	expiry time.Time
}

// updateFunc decides a write from the current item; next is the sequence
// number (the default CAS) a write made now gets. Like engine.UpdateFunc,
// it runs under the database's write lock and must be quick.
type updateFunc func(cur *curItem, next uint64) (engine.Change, error)

// update runs fn against key's current item with no other write in
// between: every read-check-write command goes through it.
func (s *Server) update(key []byte, fn updateFunc) error {
	return s.updateHint(key, nil, fn)
}

// updateHint is update for a write whose item data is likely hint (see
// backend.UpdateHint).
func (s *Server) updateHint(key, hint []byte, fn updateFunc) error {
	if s.fill != nil {
		// Before the write lock: a load of key in flight is discarded
		// (fill.Store).
		s.fill.Invalidate(key)
	}
	return s.applyHint(key, hint, fn)
}

// apply is update without telling the fill queue (its own store).
func (s *Server) apply(key []byte, fn updateFunc) error {
	return s.applyHint(key, nil, fn)
}

func (s *Server) applyHint(key, hint []byte, fn updateFunc) error {
	replacedFlushed := false
	_, err := s.db.UpdateHint(key, hint, func(v []byte, it engine.Item, found bool, next uint64) (engine.Change, error) {
		var cur curItem
		flushed := found && s.flushed(it.Seq)
		if found && !flushed {
			h, data, err := s.parseStored(v, it)
			if err != nil {
				return engine.Change{}, err
			}
			cur = curItem{found: true, hdr: h, data: data, expiry: it.Expiry}
		}
		ch, err := fn(&cur, next)
		replacedFlushed = flushed && err == nil && ch.Op != engine.Keep
		return ch, err
	})
	if err == nil && replacedFlushed {
		s.sweep.removed()
	}
	return err
}

// readItem reads key's item into dst (the returned data aliases it). A
// flushed item is engine.ErrNotFound.
func (s *Server) readItem(dst, key []byte) (buf []byte, h itemHdr, data []byte, expiry time.Time, err error) {
	v, it, err := s.db.AppendItem(dst, key)
	if err != nil {
		return v, h, nil, expiry, err
	}
	if s.flushed(it.Seq) {
		return v, h, nil, expiry, engine.ErrNotFound
	}
	h, data, err = s.parseStored(v, it)
	return v, h, data, it.Expiry, err
}

// parseStored is parseItem for a value the engine returned with it: a
// pair of a base bundle of plain values (bundle.ValuesPlain, what 'marlin
// bundle build' makes from dump files) is the data itself, served as an
// item with flags 0 and the base's sequence number as its CAS (no write
// has that number, and a new base has a new one). A base folded from a
// served database holds items (bundle.ValuesItems).
func (s *Server) parseStored(v []byte, it engine.Item) (itemHdr, []byte, error) {
	if it.Base && s.edb.Base().ValueFormat == bundle.ValuesPlain {
		return itemHdr{cas: it.Seq}, v, nil
	}
	return parseItem(v)
}

// PrepareFold sets o for a fold of the served database (engine.DB.Fold):
// the new base holds items (bundle.ValuesItems), the plain values of the
// current base become items as parseStored serves them, and items a
// flush_all hides are left out. Give it to admin.Config.PrepareFold.
func (s *Server) PrepareFold(o *engine.FoldOptions) {
	o.ValueFormat = bundle.ValuesItems
	o.Convert = func(dst, key, value []byte, it engine.Item) []byte {
		// The base cannot change during a fold.
		if it.Base && s.edb.Base().ValueFormat == bundle.ValuesPlain {
			return appendItem(dst, itemHdr{cas: it.Seq}, value)
		}
		return append(dst, value...)
	}
	skip := o.Skip
	o.Skip = func(key, value []byte, it engine.Item) bool {
		return s.flushed(it.Seq) || skip != nil && skip(key, value, it)
	}
}
