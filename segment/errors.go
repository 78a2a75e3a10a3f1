package segment

import (
	"errors"
	"fmt"
)

// ErrCorrupt is the sentinel for damaged data; every corruption error
// wraps it, so errors.Is(err, ErrCorrupt) works on all of them.
var ErrCorrupt = errors.New("marlin: corrupt data")

// CorruptError says where damaged data was found and what was wrong.
type CorruptError struct {
	File   string // file name, or "" when unknown
	Offset int64  // byte offset within the file
	Reason string // what was wrong
}

// Error formats the file, offset and reason.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("marlin: corrupt data in %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corruptf(off int64, format string, args ...any) error {
	return &CorruptError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// WithFile returns err with its file name set, if it is a *CorruptError.
func WithFile(err error, file string) error {
	if err == nil {
		return nil // (before ce, which escapes: no allocation on the read path)
	}
	var ce *CorruptError
	if errors.As(err, &ce) && ce.File == "" {
		c := *ce
		c.File = file
		return &c
	}
	return err
}
