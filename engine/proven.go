package engine

import (
	"fmt"
	"path/filepath"

	"github.com/marlinkv/marlin/segment"
)

// Proof of durability from the index snapshot (issue 9, item 10).
//
// A snapshot's segment table records each segment's size at the
// snapshot's accounting position, and the snapshot is written only after
// the active segment was fsynced up to that position (writeSnapshot). So
// the newest readable snapshot proves that every listed segment held at
// least its recorded size of fsynced data. Recovery uses that proof even
// when the snapshot cannot be used for anything else (a listed segment is
// gone, its entries are damaged):
//
//   - damage below a segment's proven size is corruption (ErrCorrupt naming
//     the file and offset), never a torn tail to truncate;
//   - a segment shorter than its proven size lost fsynced data: corruption
//     too, not a stale snapshot that a full replay would then "repair" by
//     truncating acknowledged records.
//
// A normal Open therefore never discards fsynced data silently; cutting it
// off is Repair's job, which says what it drops.

// noteProvenSizes records the sizes meta proves were fsynced.
func (db *DB) noteProvenSizes(meta *snapMeta) {
	db.provenSize = make(map[uint64]int64, len(meta.segs))
	for _, s := range meta.segs {
		db.provenSize[s.gen] = s.size
	}
}

// checkProvenSizes fails with ErrCorrupt if a segment file on disk is
// shorter than the size the snapshot proves was fsynced. onDisk maps
// generations to file sizes.
func (db *DB) checkProvenSizes(onDisk map[uint64]int64) error {
	for gen, proven := range db.provenSize {
		if size, ok := onDisk[gen]; ok && size < proven {
			return &segment.CorruptError{File: filepath.Join(db.dir, segment.FileName(gen)), Offset: size,
				Reason: fmt.Sprintf("segment is %d bytes but the index snapshot shows %d bytes had been fsynced", size, proven)}
		}
	}
	return nil
}
