package engine

import (
	"io"
	"iter"
	"runtime"
	"time"

	"github.com/marlinkv/marlin/segment"
)

// Iterator walks all live pairs in no particular order (log order, then
// the base's pairs the log does not override, if the DB has a base). It
// reads the log sequentially, segment by segment in large reads (see
// scan.go), and yields a record only if it is a put, not expired, and the
// index entry for its key points at exactly its location (a memory
// lookup; no read per key). It is safe to use while other goroutines
// write and compact. What a walk yields:
//
//   - Each pair is a complete record that was the key's value when Next
//     returned it (the index pointed at it then).
//   - No key is yielded twice, whatever happens during the walk.
//   - Every key that is present for the whole walk and not written
//     (overwritten, deleted, or given a new TTL) during it is yielded,
//     exactly once, unless it expires during the walk.
//   - A key deleted, or overwritten, before the walk starts (before the
//     first call to Next) is not yielded (overwritten: only with its new
//     value). A key deleted during the walk is not yielded if the delete
//     returned before Next reached the key's record.
//   - A key written during the walk may be missed, even if it existed
//     before: the walk covers the log as it was when it started, and an
//     overwrite moves the key's live record beyond that extent. A key
//     created during the walk is not yielded.
//
// A base switched during the walk (SetBase, Fold) ends it with
// ErrBaseChanged: the pairs of the old base and the delta's would no
// longer fit together.
//
// While a walk is in progress, compaction does not rewrite the segments
// it has not finished (they are pinned; see scan.go): a long walk holds
// back the reclaiming of those segments. Close an iterator you do not run
// to its end, or the pin stays until it is garbage-collected. An Iterator
// is not safe for concurrent use.
type Iterator struct {
	db    *DB
	s     *logScan // nil until the first Next
	key   []byte
	value []byte
	item  Item
	err   error
	done  bool

	opts    IterOptions
	skipped SkipReport

	// The base layer (base.go), if the DB had one at the first Next: its
	// pairs are yielded after the log's, except those whose key has an
	// index entry (the delta's value, or its mask, decides).
	base   *baseRef
	inBase bool
	bi     int // the next base pair
}

// IterOptions configure an Iterator.
type IterOptions struct {
	// SkipCorrupt makes the iterator step over damaged stretches of the
	// log (a failed checksum, a bad length, a read error) instead of
	// ending the walk with an error, and report the indexed records that
	// lay in them in Skipped. For salvaging what is readable from a
	// damaged database; by default the walk ends with the error when a
	// damaged stretch holds a record the index points at, so that a lost
	// pair is never missed silently (damage in dead bytes only is
	// stepped over either way).
	SkipCorrupt bool

	// chunk is the size of one sequential read (0: scanChunk); for tests.
	chunk int
}

// SkippedRecord is one index entry whose record an iterator with
// SkipCorrupt could not read: it starts in a damaged stretch of the log.
type SkippedRecord struct {
	File   string // segment file
	Offset int64  // offset of the record in File
	Err    error  // why the stretch could not be read (wraps ErrCorrupt or ErrIO)
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
	return &Iterator{db: db, opts: o}
}

// Skipped returns what the iterator skipped so far (with SkipCorrupt). The
// report is the iterator's; it is valid until the next call to Next.
func (it *Iterator) Skipped() SkipReport { return it.skipped }

// skipRecord notes that the record at off of file could not be read.
func (it *Iterator) skipRecord(file string, off int64, err error) {
	it.skipped.Count++
	if len(it.skipped.Records) < MaxSkippedListed {
		it.skipped.Records = append(it.skipped.Records, SkippedRecord{File: file, Offset: off, Err: err})
	}
}

// Next advances to the next pair and reports whether there is one. After it
// returns false, check Err. Key and Value are valid until the next call.
// The first call fixes the walk's extent (see Iterator).
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
	if it.s == nil {
		it.s = db.startScan(it.opts.chunk)
		// An iterator dropped without Close must not pin segments forever.
		runtime.AddCleanup(it, func(s *logScan) { s.release() }, it.s)
		if b := db.base.Load(); b != nil {
			it.base = newBaseRef(b)
			runtime.AddCleanup(it, func(r *baseRef) { r.release() }, it.base)
		}
	}
	if it.base != nil && db.base.Load() != it.base.b {
		return it.stop(ErrBaseChanged)
	}
	if it.inBase {
		return it.nextBase()
	}
	now := db.now()
	for {
		r, loc, err := it.s.next(it.onDamage)
		if err == io.EOF && it.base != nil {
			it.inBase = true
			return it.nextBase()
		}
		if err == io.EOF {
			return it.stop(nil)
		}
		if err != nil {
			return it.stop(err)
		}
		if r.Kind != segment.KindPut || (r.Expiry != 0 && r.Expiry <= now) {
			continue
		}
		it.s.prefetch()
		// The segment is pinned, so its id is its own and loc names this
		// record only.
		if !db.ix.Lookup(db.hash(r.Key), func(l uint64) bool { return l == loc }) {
			continue
		}
		it.key, it.value = r.Key, r.Value
		it.item = Item{Seq: r.Seq}
		if r.Expiry != 0 {
			it.item.Expiry = time.UnixMilli(r.Expiry)
		}
		return true
	}
}

// onDamage handles the damaged stretches of a segment the walk finished:
// the index entries whose records start in them are reported (SkipCorrupt)
// or end the walk with the stretch's error. Stretches no entry points into
// held only dead bytes and change nothing the walk yields.
func (it *Iterator) onDamage(sf *segFile, d []damage) error {
	return it.db.indexedIn(sf.id, d, func(off int64, d *damage) error {
		if !it.opts.SkipCorrupt {
			return d.err
		}
		it.skipRecord(sf.name, off, d.err)
		return nil
	})
}

func (it *Iterator) stop(err error) bool {
	it.done, it.err = true, err
	it.key, it.value = nil, nil
	if it.s != nil {
		it.s.release()
	}
	if it.base != nil {
		it.base.release()
	}
	return false
}

// Key returns the current key. It is valid until the next call to Next.
func (it *Iterator) Key() []byte { return it.key }

// Value returns the current value. It is valid until the next call to Next.
func (it *Iterator) Value() []byte { return it.value }

// Item returns the current pair's version: its sequence number and
// expiry, as AppendItem reports them.
func (it *Iterator) Item() Item { return it.item }

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
// slices are valid only during the call. It is a walk with an Iterator and
// gives the same guarantees (see Iterator): the log is read in order with
// large sequential reads, not one read per key.
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

// All returns the live pairs as a range-over-func sequence:
//
//	var err error
//	for k, v := range db.All(&err) {
//		...
//	}
//	if err != nil { ... }
//
// It is a walk with an Iterator, with the same guarantees; the slices are
// valid only until the loop body returns. Breaking out of the loop ends
// the walk. An error (ErrClosed, a damaged record, a read fault) ends the
// range early and is stored in *errp, which is set to nil when the range
// starts; errp must not be nil. A sequence cannot return an error itself,
// hence the pointer.
func (db *DB) All(errp *error) iter.Seq2[[]byte, []byte] {
	return func(yield func(key, value []byte) bool) {
		*errp = nil
		it := db.NewIterator()
		defer it.Close()
		for it.Next() {
			if !yield(it.Key(), it.Value()) {
				return
			}
		}
		*errp = it.Err()
	}
}
