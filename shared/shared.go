// Package shared stores identical values once: the keys that carry the
// same value point to one stored copy of it (one-to-many between values
// and keys), and the copy is reclaimed when its last key is deleted,
// overwritten or expires. It is a layer over an engine.DB built on
// engine.DB.Txn; every record it writes is an ordinary engine record, so
// recovery, compaction, snapshots and checkpoints need nothing special.
//
// Records (docs/shared-values.md has the byte layouts):
//
//   - key record, under the user's key: a tag byte, then either the value
//     itself (inline: data shorter than Options.MinSize, or values that
//     are all prefix) or the value's per-key prefix (Options.Prefix) and
//     the 16-byte content hash of the rest, the shared data. Its expiry
//     is the key's.
//   - value record, under Reserved+"v"+hash: the shared data, written once
//     when the first key refers to it.
//   - meta record, under Reserved+"m"+hash: the data's size and how many
//     keys refer to it, counted by expiry bucket (see grid.go). It is
//     small and rewritten with every change of the references, so a put
//     of a value already stored writes the key record and the meta
//     record, not the data.
//   - bucket records, under Reserved+"s"+bucket: the store's totals (keys,
//     references, values, bytes), by expiry bucket, for Stats.
//
// Every change is one engine transaction, so a crash keeps all of it or
// none: a key never refers to a value that is not stored, and a stored
// value's references are always counted. The invariant that makes expiry
// free of any pass over the keys: a value (and its meta record) never
// expires before a key that refers to it. A key that expires needs no
// write: the value it referred to expires by itself, at most one expiry
// bucket (an eighth of the key's TTL when it was written, at least about
// a second) after the last of its keys.
package shared

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Reserved is the prefix of the keys the store keeps for itself. User
// keys that begin with it are refused with ErrReservedKey.
const Reserved = "\x00shared."

// Record kinds, the byte after Reserved.
const (
	kindValue  = 'v' // + hash: the shared data
	kindMeta   = 'm' // + hash: the data's reference counts
	kindBucket = 's' // + 8-byte bucket: totals for Stats
	kindFormat = 'f' // the format marker: the database holds a store
)

// formatVersion is the format marker's value.
const formatVersion = "shared values 1"

var (
	// ErrReservedKey: the key begins with Reserved.
	ErrReservedKey = errors.New("shared: key begins with the prefix the store reserves (\\x00shared.)")
	// ErrNotShared: the database holds values written without the store
	// (shared values must be turned on for an empty database).
	ErrNotShared = errors.New("shared: the database holds values not written by a shared store")
	// ErrDangling: a key refers to a value that is not stored. Crash
	// safety rules it out; only a damaged or hand-edited database shows
	// it. It wraps engine.ErrNotFound, so a reader treats the key as a
	// miss.
	ErrDangling = fmt.Errorf("shared: key refers to a value that is not stored: %w", engine.ErrNotFound)
	// ErrBadRecord: a key record or an internal record does not decode.
	ErrBadRecord = fmt.Errorf("%w: shared: bad record", engine.ErrCorrupt)
	// ErrBadExpiry: expiries after the year 9999 are refused.
	ErrBadExpiry = errors.New("shared: expiry after the year 9999")
)

// InlineOverhead is what a value stored inline adds to it (its tag
// byte): the store's MaxValueSize is the database's less this.
const InlineOverhead = 1

// maxExpiry is the latest expiry accepted (Unix ms, the end of the year
// 9999): it keeps bucket arithmetic far from overflow.
const maxExpiry = 253402300799999

// Options configure a Store.
type Options struct {
	// MinSize: a value whose shared part (what follows its prefix) is
	// shorter than this is stored inline in its key's record, as it
	// would be without the store: a reference (16-byte hash plus the
	// meta record's upkeep) does not pay for small data. Default 64;
	// at least 1.
	MinSize int
	// Prefix, if set, says how many leading bytes of a value belong to
	// its key and are never shared: a memcached server keeps a header
	// with the item's flags and CAS in front of the data, which differs
	// between keys that hold the same data. A result outside [0,
	// len(v)] is clamped. nil means 0.
	Prefix func(v []byte) int
}

// Store is a database whose identical values are stored once. It is
// safe for concurrent use. It does not own the DB: close the DB when
// done with the store.
type Store struct {
	db   *engine.DB
	opts Options
	lim  engine.Limits
	ro   bool
}

// Open returns a store over db. db must not normalize keys or load
// misses itself (Options.KeyNormalizer, Options.Loader: they would act on
// the store's records) and must not be in cache mode
// (Options.MaxDiskBytes: eviction drops value records that keys still
// refer to). An empty database is marked as a store's (a format
// record); a database with keys but no mark is refused with
// ErrNotShared.
func Open(db *engine.DB, o Options) (*Store, error) {
	eo := db.Options()
	switch {
	case eo.KeyNormalizer != nil:
		return nil, fmt.Errorf("%w: shared values with an engine KeyNormalizer (normalize keys above the store)", engine.ErrBadOptions)
	case eo.Loader != nil:
		return nil, fmt.Errorf("%w: shared values with an engine Loader (fill above the store)", engine.ErrBadOptions)
	case eo.MaxDiskBytes > 0:
		return nil, fmt.Errorf("%w: shared values in cache mode (MaxDiskBytes): eviction would drop values that keys refer to", engine.ErrBadOptions)
	}
	if o.MinSize == 0 {
		o.MinSize = 64
	}
	if o.MinSize < 1 {
		return nil, fmt.Errorf("%w: shared: MinSize %d", engine.ErrBadOptions, o.MinSize)
	}
	lim := db.Limits()
	lim.MaxValueSize -= InlineOverhead
	s := &Store{db: db, opts: o, lim: lim, ro: eo.ReadOnly}
	if err := s.checkFormat(); err != nil {
		return nil, err
	}
	return s, nil
}

// Formatted reports whether db holds a store (its format record): a
// server that is not told to use shared values refuses such a database
// instead of serving its internal records as items.
func Formatted(db *engine.DB) (bool, error) {
	v, err := db.Get(formatKey())
	switch {
	case errors.Is(err, engine.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case string(v) != formatVersion:
		return false, fmt.Errorf("%w: format record %q (this version reads %q)", ErrBadRecord, v, formatVersion)
	}
	return true, nil
}

// checkFormat checks, or writes on an empty database, the format record.
func (s *Store) checkFormat() error {
	ok, err := Formatted(s.db)
	if err != nil || ok {
		return err
	}
	st, err := s.db.Stats()
	if err != nil {
		return err
	}
	if st.Keys > 0 {
		return ErrNotShared
	}
	if s.ro {
		return nil // an empty database opened read-only: nothing to mark
	}
	_, err = s.db.Txn(func(tx *engine.Tx) error {
		_, _, found, err := tx.Get(formatKey())
		if err != nil || found {
			return err
		}
		return tx.Put(formatKey(), []byte(formatVersion), time.Time{})
	})
	return err
}

// DB returns the database the store is over.
func (s *Store) DB() *engine.DB { return s.db }

// Limits returns the largest key and value the store accepts: the
// database's, less the byte an inline value's tag takes.
func (s *Store) Limits() engine.Limits { return s.lim }

// IsReserved reports whether key is one the store keeps for itself.
func IsReserved(key []byte) bool { return bytes.HasPrefix(key, []byte(Reserved)) }

// checkKey refuses reserved keys (and leaves the rest to the engine).
func checkKey(key []byte) error {
	if IsReserved(key) {
		return ErrReservedKey
	}
	return nil
}

// hash is a shared value's content hash: the first 16 bytes of its
// SHA-256. A collision-resistant hash lets a put share a value without
// reading the stored copy to compare it (a read under the write lock);
// computing it costs about 0.7 us per KiB, before the lock.
type hash [16]byte

func hashOf(data []byte) hash {
	sum := sha256.Sum256(data)
	return hash(sum[:16])
}

func internalKey(kind byte, rest []byte) []byte {
	k := make([]byte, 0, len(Reserved)+1+len(rest))
	k = append(k, Reserved...)
	k = append(k, kind)
	return append(k, rest...)
}

func valueKey(h hash) []byte { return internalKey(kindValue, h[:]) }
func metaKey(h hash) []byte  { return internalKey(kindMeta, h[:]) }
func formatKey() []byte      { return internalKey(kindFormat, nil) }

// expiryTime converts Unix ms (0: none) to an engine expiry.
func expiryTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// expiryMs converts an engine expiry (zero: none) to Unix ms.
func expiryMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
