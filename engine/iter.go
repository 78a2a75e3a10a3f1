package engine

import (
	"errors"
	"runtime/debug"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Iterator walks all live pairs in no particular order. It is safe to use
// while other goroutines write and compact. It works one index shard at a
// time from a consistent cut of the shard's locations, so every key is
// visited at most once, every key present for the whole walk is visited,
// and each pair is a complete record that was the key's value at some
// moment during the walk. Keys written or deleted during the walk may or
// may not be seen.
//
// When compaction removes a segment under a cut, the iterator takes a new
// cut of the shard and skips the keys it already returned from it; to know
// them it keeps the current shard's returned keys (not values), so its
// memory is bounded by one shard's keys plus one value. An Iterator is not
// safe for concurrent use.
type Iterator struct {
	db    *DB
	shard int
	locs  []uint64
	gens  []uint64 // generation of each location's segment when the cut was taken
	i     int
	key   []byte
	value []byte
	err   error
	done  bool

	shardKeys []byte          // keys returned from the current shard, back to back
	keyEnds   []int           // end offset of each of them in shardKeys
	skip      map[string]bool // after a re-cut: keys already returned

	opts    IterOptions
	skipped SkipReport
}

// IterOptions configure an Iterator.
type IterOptions struct {
	// SkipCorrupt makes the iterator step over records it cannot read (a
	// failed checksum, a bad length, an I/O error) instead of ending the
	// walk with the error; Skipped reports them. For salvaging what is
	// readable from a damaged database; the default stops at the first
	// unreadable record, so that damage is never missed silently.
	SkipCorrupt bool
}

// SkippedRecord is one index entry an iterator with SkipCorrupt could not
// read.
type SkippedRecord struct {
	File   string // segment file
	Offset int64  // offset of the record in File
	Err    error  // why it could not be read (wraps ErrCorrupt or ErrIO)
}

// MaxSkippedListed bounds SkipReport.Records; Count counts all of them.
const MaxSkippedListed = 1000

// SkipReport says what an iterator with SkipCorrupt skipped.
type SkipReport struct {
	Count   int64           // index entries whose record could not be read
	Records []SkippedRecord // the first MaxSkippedListed of them
}

// NewIterator returns an iterator positioned before the first pair.
func (db *DB) NewIterator() *Iterator {
	return db.NewIteratorWith(IterOptions{})
}

// NewIteratorWith returns an iterator with options, positioned before the
// first pair.
func (db *DB) NewIteratorWith(o IterOptions) *Iterator {
	return &Iterator{db: db, shard: -1, opts: o}
}

// Skipped returns what the iterator skipped so far (with SkipCorrupt). The
// report is the iterator's; it is valid until the next call to Next.
func (it *Iterator) Skipped() SkipReport { return it.skipped }

// skipRecord notes that the record at loc could not be read.
func (it *Iterator) skipRecord(loc uint64, err error) {
	it.skipped.Count++
	if len(it.skipped.Records) >= MaxSkippedListed {
		return
	}
	id, off := segment.SplitLoc(loc)
	file := ""
	if sf := it.db.segs[id].Load(); sf != nil {
		file = sf.name
	}
	it.skipped.Records = append(it.skipped.Records, SkippedRecord{File: file, Offset: off, Err: err})
}

// Next advances to the next pair and reports whether there is one. After it
// returns false, check Err. Key and Value are valid until the next call.
func (it *Iterator) Next() bool {
	if it.done {
		return false
	}
	db := it.db
	g, err := db.enter()
	if err != nil {
		return it.stop(err)
	}
	defer db.exit(g)
	now := db.now()
	for {
		for it.i < len(it.locs) {
			loc := it.locs[it.i]
			gen := it.gens[it.i]
			it.i++
			// Between calls to Next, compaction may remove the location's
			// segment and a new one may take its id: the location would then
			// name another record. The generation tells.
			id, _ := segment.SplitLoc(loc)
			if sf := db.segs[id].Load(); sf == nil || sf.gen != gen {
				it.recut()
				continue
			}
			r, locked, err := db.recordAt(loc)
			if errors.Is(err, errStale) {
				it.recut()
				continue
			}
			var ok bool
			if err == nil {
				ok = r.Kind == segment.KindPut && (r.Expiry == 0 || r.Expiry > now) && !it.skip[string(r.Key)]
				if ok {
					err = it.take(&r, locked)
				}
				if locked {
					db.tailMu.RUnlock()
				}
			}
			if err != nil && it.opts.SkipCorrupt {
				it.skipRecord(loc, err)
				continue
			}
			if err != nil {
				return it.stop(err)
			}
			if ok {
				it.shardKeys = append(it.shardKeys, it.key...)
				it.keyEnds = append(it.keyEnds, len(it.shardKeys))
				return true
			}
		}
		it.shard++
		if it.shard >= index.NumShards {
			return it.stop(nil)
		}
		it.shardKeys, it.keyEnds, it.skip = it.shardKeys[:0], it.keyEnds[:0], nil
		it.cut()
	}
}

// take copies r's key and value into the iterator. Copying from a mapping
// reads it again, so a memory fault is caught and returned (inTail: the
// bytes are in the tail buffer, which cannot fault).
func (it *Iterator) take(r *segment.Record, inTail bool) (err error) {
	if !inTail {
		defer it.db.catchFault(debug.SetPanicOnFault(true), &err)
	}
	it.key = append(it.key[:0], r.Key...)
	it.value = append(it.value[:0], r.Value...)
	return nil
}

// cut takes a consistent cut of the current shard's locations and notes
// their segments' generations.
func (it *Iterator) cut() {
	it.locs, it.i = it.db.ix.ShardLocations(it.shard, it.locs[:0]), 0
	it.gens = it.gens[:0]
	for _, loc := range it.locs {
		id, _ := segment.SplitLoc(loc)
		var g uint64
		if sf := it.db.segs[id].Load(); sf != nil {
			g = sf.gen
		}
		it.gens = append(it.gens, g)
	}
}

// recut takes a fresh cut of the current shard after a location went
// stale, remembering which keys were already returned.
func (it *Iterator) recut() {
	it.skip = make(map[string]bool, len(it.keyEnds))
	start := 0
	for _, end := range it.keyEnds {
		it.skip[string(it.shardKeys[start:end])] = true
		start = end
	}
	it.cut()
}

func (it *Iterator) stop(err error) bool {
	it.done, it.err = true, err
	it.key, it.value = nil, nil
	return false
}

// Key returns the current key. It is valid until the next call to Next.
func (it *Iterator) Key() []byte { return it.key }

// Value returns the current value. It is valid until the next call to Next.
func (it *Iterator) Value() []byte { return it.value }

// Err returns the error that ended the walk, if any.
func (it *Iterator) Err() error { return it.err }

// Close ends the walk early. It is optional after Next returned false.
func (it *Iterator) Close() error {
	if !it.done {
		it.stop(nil)
	}
	return nil
}

// ForEach calls fn for every live pair, stopping at fn's first error. The
// slices are valid only during the call.
func (db *DB) ForEach(fn func(key, value []byte) error) error {
	it := db.NewIterator()
	defer it.Close()
	for it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Err()
}
