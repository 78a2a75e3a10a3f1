package server

import (
	"errors"

	"github.com/marlinkv/marlin/engine"
)

// IOMode chooses how connections are served.
type IOMode string

const (
	// IOAuto is IOLoop unless the database syncs before every reply (engine.SyncGroup, SyncAlways):
	// then concurrent writers share an fsync only when each has a
	// goroutine of its own to wait in, and IOGoroutine serves them.
	IOAuto IOMode = ""
	// IOLoop serves every connection from a few event loops, one per
	// core (loop_linux.go): no goroutine and no buffers per idle
	// connection, and no wakeup per command. A command that must wait
	// for the disk (a read of data not in the page cache, an fsync)
	// holds up the other connections of its loop while it waits.
	IOLoop IOMode = "loop"
	// IOGoroutine serves each connection from a goroutine of its own
	// (conn.go): a slow command holds up only its own connection.
	IOGoroutine IOMode = "goroutine"
)

// ioMode resolves cfg.IO for db.
func ioMode(m IOMode, db *engine.DB) (IOMode, error) {
	switch m {
	case IOAuto:
		if s := db.Options().Sync; s == engine.SyncGroup || s == engine.SyncAlways {
			return IOGoroutine, nil
		}
		return IOLoop, nil
	case IOLoop, IOGoroutine:
		return m, nil
	}
	return "", errors.New("server: unknown IO mode " + string(m))
}

// loopState is what an event loop keeps for a connection between its
// readiness events. Only the goroutine serving the connection touches it
// (the loop's owner, or the goroutine it was handed off to: loop_linux.go).
type loopState struct {
	fd  int        // the socket, non-blocking
	src loopSource // the input being parsed, while served

	// pendIn holds the start of a command not yet whole; pendOut reply
	// bytes the socket did not take. While pendOut is not empty the
	// connection runs nothing more and is watched for writability.
	pendIn, pendOut []byte
	// needAt is the position in src the incomplete command needs (set
	// by conn.need); after the command's bytes are kept in pendIn it is
	// how long pendIn must grow before the command is parsed again.
	needAt int
	// lineAt: the incomplete command is a text line with no newline in
	// its first lineAt bytes; it is parsed again once a newline comes.
	lineAt int
	// skip is how many more bytes of a refused data block to drop.
	skip int64

	lastActive int64 // nanotime of the last read or reply
	inSince    int64 // nanotime pendIn (or skip) began: ReadTimeout
	outSince   int64 // nanotime pendOut began: WriteTimeout

	detached bool   // handed off: its loop ignores it (guarded by loop.mu)
	closed   bool   // closed by its loop
	holding  bool   // counted in loop.held
	owner    *owner // the loop role serving it now
	lw       loopWriter
}

// loopSource is what a loop's buffered reader reads a connection's
// input from: the bytes read so far. Reading past them is errShort, and
// marks the command being parsed as incomplete.
type loopSource struct {
	b     []byte
	pos   int
	short bool
}

// errShort: the input ends inside a command.
var errShort = errors.New("server: command incomplete")

func (s *loopSource) Read(p []byte) (int, error) {
	if s.pos == len(s.b) {
		s.short = true
		return 0, errShort
	}
	n := copy(p, s.b[s.pos:])
	s.pos += n
	return n, nil
}

func (s *loopSource) left() int { return len(s.b) - s.pos }
