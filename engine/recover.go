package engine

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/marlinkv/marlin/segment"
)

// Recovery rebuilds the index by replaying every segment, oldest
// generation first. The order does not decide which version of a key wins:
// every record carries a sequence number and the highest one wins, because
// (with compaction) a copy of an old record can sit in a newer segment than
// a fresh overwrite.
//
// Tombstones take part in the replay as index entries, so that an older
// put replayed after its tombstone cannot resurrect the key; they are
// removed from the index once every segment has been read.
//
// Damage handling (DESIGN-NOTES rule 7): every segment but the newest was
// fsynced before its successor was created, so any bad record in it is
// corruption and Open fails with ErrCorrupt naming the file and offset. In
// the newest segment, a bad record, a short read or a batch without its
// commit may be a torn write that was never fsynced: the segment is
// truncated there and fsynced before anything is appended, unless a valid
// sync mark further on proves that the damaged bytes had been fsynced, in
// which case it is corruption too.

// tomb is a tombstone's index entry, removed at the end of recovery.
type tomb struct{ h, loc uint64 }

func (db *DB) recover() error {
	names, err := db.fs.List(db.dir)
	if err != nil {
		return fmt.Errorf("marlin: list %s: %w", db.dir, err)
	}
	var gens []uint64
	for _, n := range names {
		if g, ok := segment.ParseFileName(n); ok {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] < gens[j] })
	var tombs []tomb
	var newest *segFile
	for i, gen := range gens {
		db.nextGen = gen + 1
		isNewest := i == len(gens)-1
		sf, err := db.openSegment(gen, isNewest)
		if err != nil {
			return err
		}
		if sf == nil {
			continue // a torn creation, removed
		}
		if err := db.replaySegment(sf, isNewest, &tombs); err != nil {
			return err
		}
		if isNewest {
			newest = sf
		}
	}
	for _, t := range tombs {
		db.ix.DeleteExact(t.h, t.loc)
	}
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			sf.dead.Store(sf.flushed.Load() - segment.HeaderSize - sf.live.Load())
		}
	}
	return db.startActive(newest)
}

// openSegment opens and maps the segment file of generation gen. For the
// newest segment it returns nil, nil when the file is a torn creation (too
// short for a header, or an all-zero header), after removing it.
func (db *DB) openSegment(gen uint64, newest bool) (*segFile, error) {
	name := filepath.Join(db.dir, segment.FileName(gen))
	open := db.fs.Open
	if newest {
		open = db.fs.OpenReadWrite
	}
	f, err := open(name)
	if err != nil {
		return nil, fmt.Errorf("marlin: open segment: %w", err)
	}
	sf := &segFile{gen: gen, name: name, f: f}
	fail := func(err error) (*segFile, error) {
		_ = sf.close()
		return nil, err
	}
	size, err := f.Size()
	if err != nil {
		return fail(fmt.Errorf("marlin: stat %s: %w", name, err))
	}
	hb := make([]byte, segment.HeaderSize)
	if size >= segment.HeaderSize {
		if _, err := f.ReadAt(hb, 0); err != nil {
			return fail(fmt.Errorf("marlin: read %s: %w", name, err))
		}
	}
	if newest && (size < segment.HeaderSize || bytes.Count(hb, []byte{0}) == len(hb)) {
		db.opts.Logger.Warn("marlin: removing segment torn at creation", "file", name, "size", size)
		_ = sf.close()
		if err := db.fs.Remove(name); err != nil {
			return nil, fmt.Errorf("marlin: remove %s: %w", name, err)
		}
		if err := db.fs.SyncDir(db.dir); err != nil {
			return nil, fmt.Errorf("marlin: sync %s: %w", db.dir, err)
		}
		return nil, nil
	}
	hdr, err := segment.DecodeHeader(hb)
	switch {
	case err != nil:
		return fail(segment.WithFile(err, name))
	case hdr.Generation != gen:
		return fail(&segment.CorruptError{File: name, Reason: fmt.Sprintf("header says generation %d", hdr.Generation)})
	case db.segs[hdr.ID].Load() != nil:
		return fail(&segment.CorruptError{File: name, Reason: fmt.Sprintf("segment id %d used twice", hdr.ID)})
	case size > segment.MaxSegmentSize:
		return fail(&segment.CorruptError{File: name, Offset: segment.MaxSegmentSize, Reason: "segment larger than a location can address"})
	}
	sf.id = hdr.ID
	mapLen := size
	if newest {
		mapLen = max(size, db.opts.SegmentSize)
	}
	if sf.m, err = f.Map(int(mapLen)); err != nil {
		return fail(fmt.Errorf("marlin: map %s: %w", name, err))
	}
	sf.data = sf.m.Bytes()
	sf.flushed.Store(size)
	sf.durable.Store(size)
	sf.marked = size
	db.segs[sf.id].Store(sf)
	return sf, nil
}

// replaySegment feeds a segment's committed records to the index and, for
// the newest segment, truncates a torn tail.
func (db *DB) replaySegment(sf *segFile, newest bool, tombs *[]tomb) error {
	size := sf.flushed.Load()
	data := sf.data[:size]
	end, err := segment.Scan(data, sf.gen, db.lim, func(es []segment.Entry) error {
		return db.replayUnit(sf, es, tombs)
	})
	if err != nil && (!newest || !errors.Is(err, ErrCorrupt)) {
		return segment.WithFile(err, sf.name)
	}
	if err != nil {
		if claim := segment.SyncedClaim(data, sf.gen, db.lim, end); claim > end {
			return fmt.Errorf("%w (a sync mark shows the data up to offset %d had been fsynced)",
				segment.WithFile(err, sf.name), claim)
		}
		db.opts.Logger.Warn("marlin: truncating torn tail", "file", sf.name,
			"offset", end, "dropped", size-end, "reason", err)
		db.st.truncated.Add(size - end)
	}
	if end != size {
		if err := sf.f.Truncate(end); err != nil {
			return fmt.Errorf("marlin: truncate %s: %w", sf.name, err)
		}
		if err := sf.f.Sync(); err != nil {
			return fmt.Errorf("marlin: fsync %s: %w", sf.name, err)
		}
		sf.flushed.Store(end)
		sf.durable.Store(end)
		sf.marked = end
	}
	return nil
}

// replayUnit applies committed records: the highest sequence number wins.
func (db *DB) replayUnit(sf *segFile, es []segment.Entry, tombs *[]tomb) error {
	for i := range es {
		e := &es[i]
		r := &e.Rec
		if r.Seq >= db.nextSeq {
			db.nextSeq = r.Seq + 1
		}
		loc := segment.Loc(sf.id, e.Off)
		h := db.hash(r.Key)
		var oldSize int
		var oldTomb bool
		old, found, replaced, err := db.ix.Put(h, loc, func(old uint64) (bool, bool) {
			or, _, err := db.recordAt(old)
			if err != nil || !bytes.Equal(or.Key, r.Key) {
				return false, false
			}
			oldSize = segment.Size(len(or.Key), len(or.Value), or.Expiry != 0)
			oldTomb = or.Kind == segment.KindDelete
			return true, r.Seq > or.Seq
		})
		if err != nil {
			return fmt.Errorf("marlin: index: %w", err)
		}
		if found && !replaced {
			continue
		}
		if found && !oldTomb {
			oid, _ := segment.SplitLoc(old)
			db.segs[oid].Load().live.Add(-int64(oldSize))
		}
		if r.Kind == segment.KindDelete {
			*tombs = append(*tombs, tomb{h, loc})
		} else {
			sf.live.Add(int64(e.Size))
		}
	}
	return nil
}

// startActive makes the newest segment the active one if it has room, and
// otherwise creates a new segment. The newest segment is fsynced first, so
// everything recovery kept counts as durable.
func (db *DB) startActive(newest *segFile) error {
	if newest != nil {
		if err := newest.f.Sync(); err != nil {
			return fmt.Errorf("marlin: fsync %s: %w", newest.name, err)
		}
		if newest.flushed.Load()+int64(segment.Size(db.opts.MaxKeySize, db.opts.MaxValueSize, true)) <= db.opts.SegmentSize {
			db.active = newest
			db.tail.start = newest.flushed.Load()
			return nil
		}
		newest.sealed.Store(true)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	sf, err := db.createSegmentLocked()
	if err != nil {
		return err
	}
	db.active = sf
	db.tail.start = segment.HeaderSize
	return nil
}
