package server

import (
	"bytes"
	"strconv"
)

// The text protocol's command lines (memcached's doc/protocol.txt). A line
// is split on spaces into at most maxTokens tokens; parseText turns it into
// a textCmd whose byte slices alias the line (valid until the connection
// reads the next line). Replies to malformed lines are memcached 1.6's, as
// checked against the memcached binary (server_test.go).

const (
	// maxKeyLen is memcached's KEY_MAX_LENGTH.
	maxKeyLen = 250
	// maxTokens bounds a line's tokens: a get of many keys takes one per
	// key, and a line is at most maxLine bytes anyway.
	maxTokens = 24 << 10
	// relativeExptimeMax: an exptime up to 30 days is relative to now,
	// a larger one is a Unix time.
	relativeExptimeMax = 60 * 60 * 24 * 30
)

// textKind names a text command.
type textKind int

const (
	cmdSet textKind = iota + 1
	cmdAdd
	cmdReplace
	cmdAppend
	cmdPrepend
	cmdCas
	cmdGet
	cmdGets
	cmdGat
	cmdGats
	cmdTouch
	cmdDelete
	cmdIncr
	cmdDecr
	cmdVersion
	cmdVerbosity
	cmdQuit
	cmdFlushAll
	cmdStats
)

// textCmd is one parsed command line.
type textCmd struct {
	kind    textKind
	key     []byte   // storage, touch, delete, incr/decr
	keys    [][]byte // get, gets, gat, gats
	flags   uint32
	exptime int64 // as sent (see expiryOf)
	bytes   int   // storage: the data block's length
	cas     uint64
	delta   uint64
	noreply bool
	args    [][]byte // stats: its arguments
}

// protoError is a reply line for a command that could not be parsed or
// run. swallow, for a storage command, is how many bytes of data block
// (its CRLF included) the connection must read and drop first.
type protoError struct {
	line    string
	swallow int64
}

func (e *protoError) Error() string { return e.line }

var (
	errUnknown       = &protoError{line: "ERROR"}
	errFormat        = &protoError{line: "CLIENT_ERROR bad command line format"}
	errDeleteFormat  = &protoError{line: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"}
	errDelta         = &protoError{line: "CLIENT_ERROR invalid numeric delta argument"}
	errExptime       = &protoError{line: "CLIENT_ERROR invalid exptime argument"}
	errLineTooLong   = &protoError{line: "CLIENT_ERROR line too long"}
	errBadDataChunk  = &protoError{line: "CLIENT_ERROR bad data chunk"}
	errNonNumeric    = &protoError{line: "CLIENT_ERROR cannot increment or decrement non-numeric value"}
	errTooLargeReply = "SERVER_ERROR object too large for cache"
)

// tokens splits line on spaces (empty tokens skipped) into dst.
func tokens(dst [][]byte, line []byte) ([][]byte, bool) {
	dst = dst[:0]
	for len(line) > 0 {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			i = len(line)
		}
		if i > 0 {
			if len(dst) == maxTokens {
				return dst, false
			}
			dst = append(dst, line[:i])
		}
		if i == len(line) {
			break
		}
		line = line[i+1:]
	}
	return dst, true
}

// validKey reports whether k is a key memcached accepts: 1 to 250 bytes.
// protocol.txt asks clients for keys without control characters, but
// memcached does not check, and clients rely on it: memcaslap's keys
// start with eight 0x10 bytes. A key cannot hold a space (it ends the
// token) or a NUL (it ends the line; see conn.command).
func validKey(k []byte) bool {
	return len(k) > 0 && len(k) <= maxKeyLen
}

// parseText parses one command line (without its CRLF). toks is scratch
// space for the tokens. maxItem is the largest data block stored.
func parseText(line []byte, toks [][]byte, maxItem int) (textCmd, [][]byte, error) {
	toks, ok := tokens(toks, line)
	if !ok {
		return textCmd{}, toks, errLineTooLong
	}
	if len(toks) == 0 {
		return textCmd{}, toks, errUnknown
	}
	var c textCmd
	switch string(toks[0]) {
	case "set":
		c.kind = cmdSet
	case "add":
		c.kind = cmdAdd
	case "replace":
		c.kind = cmdReplace
	case "append":
		c.kind = cmdAppend
	case "prepend":
		c.kind = cmdPrepend
	case "cas":
		c.kind = cmdCas
	case "get":
		c.kind = cmdGet
	case "gets":
		c.kind = cmdGets
	case "gat":
		c.kind = cmdGat
	case "gats":
		c.kind = cmdGats
	case "touch":
		c.kind = cmdTouch
	case "delete":
		c.kind = cmdDelete
	case "incr":
		c.kind = cmdIncr
	case "decr":
		c.kind = cmdDecr
	case "version":
		c.kind = cmdVersion
		return c, toks, nil
	case "verbosity":
		// verbosity <level> [noreply]; a level that is not a number is a
		// format error (silent with noreply, as memcached).
		c.kind = cmdVerbosity
		if len(toks) < 2 || len(toks) > 3 {
			return c, toks, errUnknown
		}
		c.noreply = string(toks[len(toks)-1]) == "noreply"
		if _, err := strconv.ParseUint(string(toks[1]), 10, 32); err != nil {
			return c, toks, errFormat
		}
		return c, toks, nil
	case "flush_all":
		// flush_all [delay] [noreply]
		c.kind = cmdFlushAll
		args := toks[1:]
		if n := len(args); n > 0 && string(args[n-1]) == "noreply" {
			c.noreply, args = true, args[:n-1]
		}
		switch {
		case len(args) > 1:
			return c, toks, errUnknown
		case len(args) == 1:
			e, err := strconv.ParseInt(string(args[0]), 10, 64)
			if err != nil {
				return c, toks, errExptime
			}
			c.exptime = e
		}
		return c, toks, nil
	case "stats":
		c.kind = cmdStats
		c.args = toks[1:]
		return c, toks, nil
	case "quit":
		c.kind = cmdQuit
		return c, toks, nil
	default:
		return c, toks, errUnknown
	}
	args := toks[1:]
	switch c.kind {
	case cmdGet, cmdGets, cmdGat, cmdGats:
		if c.kind == cmdGat || c.kind == cmdGats {
			if len(args) < 2 {
				return c, toks, errUnknown
			}
			e, err := strconv.ParseInt(string(args[0]), 10, 64)
			if err != nil {
				return c, toks, errExptime
			}
			c.exptime, args = e, args[1:]
		}
		if len(args) == 0 {
			return c, toks, errUnknown
		}
		for _, k := range args {
			if !validKey(k) {
				return c, toks, errFormat
			}
		}
		c.keys = args
		return c, toks, nil
	case cmdSet, cmdAdd, cmdReplace, cmdAppend, cmdPrepend, cmdCas:
		return parseStorage(c, args, toks, maxItem)
	case cmdTouch:
		if len(args) != 2 && !(len(args) == 3 && string(args[2]) == "noreply") {
			return c, toks, errUnknown
		}
		c.noreply = len(args) == 3
		if !validKey(args[0]) {
			return c, toks, errFormat
		}
		e, err := strconv.ParseInt(string(args[1]), 10, 64)
		if err != nil {
			return c, toks, errExptime
		}
		c.key, c.exptime = args[0], e
		return c, toks, nil
	case cmdDelete:
		// delete <key> [0] [noreply]: memcached 1.6 still accepts a zero
		// time from old clients, nothing else.
		if len(args) == 0 || len(args) > 3 {
			return c, toks, errUnknown
		}
		if n := len(args); string(args[n-1]) == "noreply" {
			c.noreply, args = true, args[:n-1]
		}
		if len(args) == 2 && string(args[1]) != "0" || len(args) > 2 || len(args) == 0 {
			return c, toks, errDeleteFormat
		}
		if !validKey(args[0]) {
			return c, toks, errFormat
		}
		c.key = args[0]
		return c, toks, nil
	case cmdIncr, cmdDecr:
		if len(args) != 2 && !(len(args) == 3 && string(args[2]) == "noreply") {
			return c, toks, errUnknown
		}
		c.noreply = len(args) == 3
		if !validKey(args[0]) {
			return c, toks, errFormat
		}
		d, err := strconv.ParseUint(string(args[1]), 10, 64)
		if err != nil {
			return c, toks, errDelta
		}
		c.key, c.delta = args[0], d
		return c, toks, nil
	}
	return c, toks, errUnknown
}

// parseStorage parses "<key> <flags> <exptime> <bytes> [<cas>] [noreply]".
func parseStorage(c textCmd, args, toks [][]byte, maxItem int) (textCmd, [][]byte, error) {
	want := 4
	if c.kind == cmdCas {
		want = 5
	}
	if len(args) == want+1 && string(args[want]) == "noreply" {
		c.noreply = true
	} else if len(args) != want {
		return c, toks, errUnknown
	}
	if !validKey(args[0]) {
		return c, toks, errFormat
	}
	flags, err1 := strconv.ParseUint(string(args[1]), 10, 32)
	exptime, err2 := strconv.ParseInt(string(args[2]), 10, 64)
	n, err3 := strconv.ParseInt(string(args[3]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || n < 0 || n > 1<<62 {
		return c, toks, errFormat
	}
	if c.kind == cmdCas {
		cas, err := strconv.ParseUint(string(args[4]), 10, 64)
		if err != nil {
			return c, toks, errFormat
		}
		c.cas = cas
	}
	c.key, c.flags, c.exptime = args[0], uint32(flags), exptime
	if n > int64(maxItem) {
		// memcached reads the data and drops it, then says why.
		return c, toks, &protoError{line: errTooLargeReply, swallow: n + 2}
	}
	c.bytes = int(n)
	return c, toks, nil
}
