// Package server serves a Marlin database over memcached's protocols.
package server

import (
	"encoding/binary"
	"errors"
)

// How an item is stored in the engine. memcached gives every item 32-bit
// client flags and a 64-bit CAS unique that changes with every write of
// the item but not with a touch; both must survive a restart. The engine
// stores bytes and versions records (engine.Item.Seq), so the server keeps
// both in a header in front of the data:
//
//	+----------------+-------------------+------------------+
//	| flags (4, LE)  | cas (8, LE)       | data (n bytes)   |
//	+----------------+-------------------+------------------+
//
// The CAS is the engine sequence number of the write that stored the
// data (engine.UpdateFunc's next), so it is unique and grows; a touch
// rewrites the record with the same header, keeping the CAS, as memcached
// does. A database served this way holds these headers in its values.

// itemHeader is the size of the header in front of an item's data.
const itemHeader = 12

var errShortItem = errors.New("server: stored value shorter than an item header")

// appendItem appends the stored form of an item to dst.
func appendItem(dst []byte, flags uint32, cas uint64, data []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, flags)
	dst = binary.LittleEndian.AppendUint64(dst, cas)
	return append(dst, data...)
}

// parseItem splits a stored value into flags, CAS and data (aliasing v).
func parseItem(v []byte) (flags uint32, cas uint64, data []byte, err error) {
	if len(v) < itemHeader {
		return 0, 0, nil, errShortItem
	}
	return binary.LittleEndian.Uint32(v), binary.LittleEndian.Uint64(v[4:]), v[itemHeader:], nil
}
