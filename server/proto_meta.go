package server

import (
	"encoding/base64"
	"strconv"
)

// The meta protocol's command lines (memcached 1.6's doc/protocol.txt,
// "Meta Commands"): "<cm> <key> [<datalen>] <flag>*", cm one of mg, ms,
// md, ma, mn, me. A flag is one character, optionally followed by its
// token ("T30", "Oabc"). Replies to malformed lines are memcached
// 1.6.18's, checked against the memcached binary (meta_test.go),
// including which check comes first and which error swallows an ms data
// block. Two flags memcached added after 1.6.18 work as in its later
// versions: E (the CAS a write gives the item) and C on mg (no value if
// the CAS matches).

const (
	// maxMetaTokens: memcached refuses a meta line of 20 tokens or more
	// (MFLAG_MAX_OPT_LENGTH counts its terminating empty token).
	maxMetaTokens = 19
	// maxOpaque is the longest O token, its flag character included.
	maxOpaque = 32
)

// metaCmd is one parsed meta command line. Its slices alias the line.
type metaCmd struct {
	code    byte   // g, s, d, a, n or e
	key     []byte // decoded if binKey; normalized once run (storeKey)
	sentKey []byte // the key token as sent
	reqKey  []byte // the key as the client named it (decoded): replies' k
	binKey  bool   // b: the key was sent in base64
	datalen int    // ms
	flags   [][]byte

	noreply bool // q
	value   bool // v
	noBump  bool // u
	// Expiry tokens (exptime rules), with whether each was given.
	hasT, hasN, hasR bool
	ttlT, ttlN, ttlR int64
	hasC, hasE       bool
	casC, casE       uint64
	clientFlags      uint32 // F
	mode             byte   // M
	initial          uint64 // J
	delta            uint64 // D
	invalidate       bool   // I
}

// has reports whether the command carries flag f.
func (m *metaCmd) has(f byte) bool {
	for _, t := range m.flags {
		if t[0] == f {
			return true
		}
	}
	return false
}

var (
	errMetaFormat    = &protoError{line: "CLIENT_ERROR bad command line format"}
	errMetaDup       = &protoError{line: "CLIENT_ERROR duplicate flag"}
	errMetaInvalid   = &protoError{line: "CLIENT_ERROR invalid flag"}
	errMetaToken     = &protoError{line: "CLIENT_ERROR bad token in command line format"}
	errMetaDecode    = &protoError{line: "CLIENT_ERROR error decoding key"}
	errMetaMLen      = &protoError{line: "CLIENT_ERROR incorrect length for M token"}
	errMetaInitial   = &protoError{line: "CLIENT_ERROR invalid numeric initial value"}
	errMetaDelta     = &protoError{line: "CLIENT_ERROR invalid numeric delta value"}
	errMetaOpaque    = &protoError{line: "CLIENT_ERROR opaque token too long"}
	errMetaMgTooMany = &protoError{line: "CLIENT_ERROR options flags are too long"}
	errMetaTooMany   = &protoError{line: "CLIENT_ERROR options flags too long"}
	errMetaBadFlag   = &protoError{line: "CLIENT_ERROR invalid or duplicate flag"}
	errMsMode        = "CLIENT_ERROR invalid mode for ms M token"
	errMaMode        = &protoError{line: "CLIENT_ERROR invalid mode for ma M token"}
)

// isMeta reports whether a command line is a meta command: a two-byte
// command word starting with 'm'.
func isMeta(line []byte) bool {
	return len(line) >= 2 && line[0] == 'm' && line[1] != ' ' && (len(line) == 2 || line[2] == ' ')
}

// parseMeta parses the tokens of a meta command line. maxItem is the
// largest data block stored.
func parseMeta(toks [][]byte, maxItem int) (metaCmd, error) {
	m := metaCmd{code: toks[0][1], delta: 1}
	switch m.code {
	case 'n':
		return m, nil
	case 'e':
		return parseMetaDebug(m, toks)
	case 'g', 's', 'd', 'a':
	default:
		return m, errUnknown
	}
	if len(toks) < 2 {
		return m, errUnknown
	}
	m.key, m.sentKey = toks[1], toks[1]
	if len(m.key) > maxKeyLen {
		return m, errMetaFormat
	}
	first := 2
	if m.code == 's' {
		if len(toks) == 2 {
			return m, errMetaFormat
		}
		first = 3
	}
	if len(toks) > maxMetaTokens {
		if m.code == 'g' {
			return m, errMetaMgTooMany
		}
		return m, errMetaTooMany
	}
	var swallow int64
	if m.code == 's' {
		n, err := strconv.ParseInt(string(toks[2]), 10, 32)
		if err != nil || n < 0 {
			return m, errMetaFormat
		}
		m.datalen, swallow = int(n), n+2
	}
	m.flags = toks[first:]
	if err := m.parseFlags(); err != nil {
		if m.code == 'd' || m.code == 'a' {
			err = errMetaBadFlag // memcached hides the detail for md and ma
		}
		return m, withSwallow(err, swallow)
	}
	for _, t := range m.flags {
		if t[0] == 'O' && len(t) > maxOpaque {
			return m, withSwallow(errMetaOpaque, swallow)
		}
	}
	switch m.code {
	case 's':
		switch m.mode {
		case 0, 'E', 'A', 'P', 'R', 'S':
		default:
			return m, &protoError{line: errMsMode, swallow: swallow}
		}
		if m.datalen > maxItem {
			return m, &protoError{line: errTooLargeReply, swallow: swallow}
		}
	case 'a':
		switch m.mode {
		case 0, 'I', '+', 'D', '-':
		default:
			return m, errMaMode
		}
	}
	return m, nil
}

func withSwallow(err error, n int64) error {
	if n == 0 {
		return err
	}
	return &protoError{line: err.(*protoError).line, swallow: n}
}

// parseFlags reads the flag tokens as memcached's _meta_flag_preparse: a
// repeated or unknown flag stops at once; a bad token is remembered (the
// last one wins) and parsing goes on.
func (m *metaCmd) parseFlags() error {
	var seen [2]uint64
	var bad error
	for _, t := range m.flags {
		f := t[0]
		if f >= 127 || seen[f>>6]&(1<<(f&63)) != 0 {
			return errMetaDup
		}
		seen[f>>6] |= 1 << (f & 63)
		arg := t[1:]
		switch f {
		case 'b':
			k, err := decodeKey(m.key)
			if err != nil {
				bad = errMetaDecode
			}
			m.key, m.binKey = k, true
		case 'N', 'T', 'R':
			v, err := strconv.ParseInt(string(arg), 10, 32)
			if err != nil {
				bad = errMetaToken
				break
			}
			switch f {
			case 'N':
				m.hasN, m.ttlN = true, v
			case 'T':
				m.hasT, m.ttlT = true, v
			default:
				m.hasR, m.ttlR = true, v
			}
		case 'O', 'P', 'L', 'k', 's', 't', 'c', 'f', 'h', 'l':
		case 'v':
			m.value = true
		case 'u':
			m.noBump = true
		case 'q':
			m.noreply = true
		case 'F':
			v, err := strconv.ParseUint(string(arg), 10, 32)
			if err != nil {
				bad = errMetaFormat
			}
			m.clientFlags = uint32(v)
		case 'C', 'E':
			v, ok := parseU64(arg)
			if !ok {
				bad = errMetaToken
				break
			}
			if f == 'C' {
				m.hasC, m.casC = true, v
			} else {
				m.hasE, m.casE = true, v
			}
		case 'M':
			if len(t) != 2 {
				bad = errMetaMLen
				break
			}
			m.mode = t[1]
		case 'J':
			v, ok := parseU64(arg)
			if !ok {
				bad = errMetaInitial
			}
			m.initial = v
		case 'D':
			v, ok := parseU64(arg)
			if !ok {
				bad = errMetaDelta
			}
			m.delta = v
		case 'I':
			m.invalidate = true
		default:
			return errMetaInvalid
		}
	}
	return bad
}

// parseMetaDebug parses "me <key> [b]".
func parseMetaDebug(m metaCmd, toks [][]byte) (metaCmd, error) {
	if len(toks) < 2 || len(toks[1]) > maxKeyLen {
		return m, errMetaFormat
	}
	m.key, m.sentKey = toks[1], toks[1]
	if len(toks) >= 3 && string(toks[2]) == "b" {
		k, err := decodeKey(m.key)
		if err != nil {
			return m, errMetaFormat
		}
		m.key, m.binKey = k, true
	}
	return m, nil
}

// decodeKey decodes a base64 key (b flag); an empty result is an error.
func decodeKey(k []byte) ([]byte, error) {
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(k))+3)
	n, err := base64.StdEncoding.Decode(out, k)
	if err != nil {
		n, err = base64.RawStdEncoding.Decode(out, k)
	}
	if err == nil && n == 0 {
		err = base64.CorruptInputError(0)
	}
	return out[:n], err
}

// parseU64 reads a decimal uint64 as strtoull does for a token: an
// optional '+', digits, nothing else.
func parseU64(b []byte) (uint64, bool) {
	if len(b) > 0 && b[0] == '+' {
		b = b[1:]
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	return v, err == nil
}
