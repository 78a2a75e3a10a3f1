package engine

import (
	"encoding/binary"

	"github.com/marlinkv/marlin/segment"
)

// Tombstones and what they shadow (issue 9, item 3).
//
// A tombstone's value is uvarint(shadowGen): the generation of the segment
// that held the record it deleted (docs/format.md). Every older version of
// the key lies at or before that record in log order (compaction copies
// only the newest version, and the log order is the sequence order), so in
// a segment of generation <= shadowGen. The tombstone is therefore needed
// only while some segment of generation <= shadowGen exists besides the
// one holding the tombstone, retired segments whose files are still on
// disk included; after that, nothing older can come back and compaction
// drops it. A copy of a tombstone keeps its shadowGen. An empty value (a
// tombstone written before this rule) means "unknown": the generation of
// its own segment, so it is needed while any older segment exists. A
// tombstone that shadows nothing (a batch delete of an absent key) carries
// 0 and is dead at once.
//
// Until it may be dropped, a tombstone's bytes count as the segment's
// "tomb" bytes, not as dead: a segment of needed tombstones does not
// qualify for compaction (which would only copy them forward again), and
// it qualifies once its tombMaxShadow is older than every other segment.

// tombValue returns the value of a tombstone that shadows generation
// shadow. The buffer is new and owned by the caller.
func tombValue(shadow uint64) []byte { return binary.AppendUvarint(nil, shadow) }

// tombShadow returns the shadowGen of tombstone r, found in a segment of
// generation gen (an empty or malformed value means gen: unknown).
func tombShadow(r *segment.Record, gen uint64) uint64 {
	if v, n := binary.Uvarint(r.Value); n > 0 && n == len(r.Value) {
		return v
	}
	return gen
}

// noteTomb counts a tombstone of size bytes that shadows generation shadow
// as needed (0: shadows nothing, so dead).
func (sf *segFile) noteTomb(size int, shadow uint64) {
	if shadow == 0 {
		sf.dead.Add(int64(size))
		return
	}
	sf.tomb.Add(int64(size))
	for {
		cur := sf.tombMaxShadow.Load()
		if cur >= shadow || sf.tombMaxShadow.CompareAndSwap(cur, shadow) {
			return
		}
	}
}

// shadowOfLocked returns the generation of the segment holding the record
// at loc (0 if it is gone). db.mu must be held.
func (db *DB) shadowOfLocked(loc uint64) uint64 {
	id, _ := segment.SplitLoc(loc)
	if sf := db.segs[id].Load(); sf != nil {
		return sf.gen
	}
	return 0
}
