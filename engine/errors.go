package engine

import (
	"errors"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Errors returned by the engine. Test them with errors.Is: most are wrapped
// with detail (a file name and offset for corruption, the limit for an
// oversized key).
var (
	// ErrNotFound: the key is absent, deleted or expired.
	ErrNotFound = errors.New("marlin: key not found")
	// ErrClosed: the DB (or an iterator) was closed.
	ErrClosed = errors.New("marlin: db closed")
	// ErrCorrupt: stored data failed a check. The error names the file and
	// offset (see segment.CorruptError).
	ErrCorrupt = segment.ErrCorrupt
	// ErrEmptyKey: keys must be at least one byte long.
	ErrEmptyKey = errors.New("marlin: empty key")
	// ErrKeyTooLarge: the key exceeds Options.MaxKeySize.
	ErrKeyTooLarge = errors.New("marlin: key too large")
	// ErrValueTooLarge: the value exceeds Options.MaxValueSize.
	ErrValueTooLarge = errors.New("marlin: value too large")
	// ErrBatchTooLarge: a batch does not fit in one segment.
	ErrBatchTooLarge = errors.New("marlin: batch too large for one segment")
	// ErrBadTTL: a TTL must be positive.
	ErrBadTTL = errors.New("marlin: ttl must be positive")
	// ErrLocked: another process (or handle) has the directory open.
	ErrLocked = vfs.ErrLocked
	// ErrFull: every segment id is in use; compact, or use larger segments.
	ErrFull = errors.New("marlin: log address space exhausted")
	// ErrFailed: an earlier write or fsync failed, so the handle refuses
	// further writes (a failed fsync is never retried: the data it covered
	// may be gone). Close it and open the directory again to recover.
	ErrFailed = errors.New("marlin: db handle failed after an I/O error")
	// ErrReadOnly: the DB was opened with Options.ReadOnly.
	ErrReadOnly = errors.New("marlin: db is read-only")
	// ErrBadOptions: an option is out of range.
	ErrBadOptions = errors.New("marlin: bad options")
	// ErrBaseChanged: the base bundle was switched (SetBase, Fold) during
	// an iterator's walk, which therefore stopped; walk again.
	ErrBaseChanged = errors.New("marlin: base switched during the walk")
	// ErrIO: a segment's bytes could not be read (the disk returned an I/O
	// error, or the file was truncated underneath its mapping). The error
	// names the file and offset; the DB keeps serving other keys.
	ErrIO = errors.New("marlin: read error")
	// ErrNotEmpty: BulkLoad builds a new database only; its target
	// directory exists and is not empty.
	ErrNotEmpty = errors.New("marlin: directory is not empty")
)
