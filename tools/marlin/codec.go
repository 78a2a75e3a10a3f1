package main

// The text forms of keys and values that dump writes and load reads.
//
// TSV ("escaped form"): printable UTF-8 passes through; backslash, tab,
// newline and carriage return become \\ \t \n \r; every other byte that is
// a control character, not valid UTF-8 or part of a non-printable rune
// becomes \xHH. The form is reversible for arbitrary bytes and never
// contains a raw tab or newline, so a pair is "key<TAB>value<LF>".
//
// JSON Lines: {"key":"...","value":"..."} with JSON strings when the bytes
// are valid UTF-8, else (or always, with dump --base64) "key_b64" /
// "value_b64" holding standard base64.
//
// Hex: lowercase hex of the key, a tab, hex of the value.

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// plainASCII[c] is true for the bytes that pass through the escaped form
// unchanged.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '\\'
	}
	return t
}()

// appendEscaped appends b in the escaped form.
func appendEscaped(dst, b []byte) []byte {
	i := 0
	for i < len(b) {
		j := i
		for j < len(b) && plainASCII[b[j]] {
			j++
		}
		dst = append(dst, b[i:j]...)
		if j == len(b) {
			break
		}
		c := b[j]
		if c < utf8.RuneSelf {
			switch c {
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&15])
			}
			i = j + 1
			continue
		}
		r, n := utf8.DecodeRune(b[j:])
		if (r == utf8.RuneError && n == 1) || !unicode.IsGraphic(r) {
			for _, x := range b[j : j+n] {
				dst = append(dst, '\\', 'x', hexDigits[x>>4], hexDigits[x&15])
			}
		} else {
			dst = append(dst, b[j:j+n]...)
		}
		i = j + n
	}
	return dst
}

// unescape decodes the escaped form s, appending to dst.
func unescape(dst, s []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		if i+1 == len(s) {
			return dst, errors.New("backslash at the end of a field")
		}
		i++
		switch s[i] {
		case '\\':
			dst = append(dst, '\\')
		case 't':
			dst = append(dst, '\t')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 'x':
			if i+2 >= len(s) {
				return dst, errors.New(`short \x escape`)
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, fmt.Errorf(`bad \x escape %q`, s[i-1:i+3])
			}
			dst = append(dst, h<<4|l)
			i += 2
		default:
			return dst, fmt.Errorf(`unknown escape "\%c" (want \\ \t \n \r or \xHH)`, s[i])
		}
	}
	return dst, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendJSONField appends "name":"string" (or "name_b64":"base64" when b is
// not valid UTF-8 or b64 is set).
func appendJSONField(dst []byte, name string, b []byte, b64 bool) []byte {
	if b64 || !utf8.Valid(b) {
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `_b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"')
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] >= 0x20 && b[j] < 0x7f && b[j] != '"' && b[j] != '\\' {
			j++
		}
		dst = append(dst, b[i:j]...)
		if j == len(b) {
			break
		}
		c := b[j]
		if c >= utf8.RuneSelf {
			// Non-printable runes (C1 controls, U+2028, format characters)
			// are escaped so that the output is safe on a terminal and in
			// JavaScript; the rest pass through.
			r, n := utf8.DecodeRune(b[j:])
			if unicode.IsGraphic(r) {
				dst = append(dst, b[j:j+n]...)
			} else if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				dst = appendU4(appendU4(dst, r1), r2)
			} else {
				dst = appendU4(dst, r)
			}
			i = j + n
			continue
		}
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = appendU4(dst, rune(c))
		}
		i = j + 1
	}
	return append(dst, '"')
}

// appendU4 appends the JSON escape \uXXXX of a BMP code point.
func appendU4(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&15], hexDigits[r>>8&15], hexDigits[r>>4&15], hexDigits[r&15])
}

// jsonDecoder decodes JSON Lines pairs, reusing its buffers.
type jsonDecoder struct {
	name, kbuf, vbuf, kb64, vb64, ebuf []byte
	// expiry is the last decoded record's "expires" (Unix ms; 0: none).
	expiry int64
}

// decode parses a JSON Lines record: an object with exactly one of "key"
// and "key_b64" and one of "value" and "value_b64", all strings, and
// optionally "expires", an RFC 3339 time (stored in d.expiry). The results alias line or the
// decoder's buffers and are valid until the next call.
func (d *jsonDecoder) decode(line []byte) (key, value []byte, err error) {
	p := &jsonParser{s: line}
	d.expiry = 0
	haveExpiry := false
	p.ws()
	if !p.eat('{') {
		return nil, nil, errors.New("not a JSON object")
	}
	var haveKey, haveValue bool
	p.ws()
	for !p.eat('}') {
		if haveKey || haveValue || haveExpiry {
			if !p.eat(',') {
				return nil, nil, errors.New("want ',' or '}' after a field")
			}
			p.ws()
		}
		name, err := p.str(&d.name)
		if err != nil {
			return nil, nil, fmt.Errorf("field name: %w", err)
		}
		p.ws()
		if !p.eat(':') {
			return nil, nil, errors.New("missing ':' after a field name")
		}
		p.ws()
		var buf, b64buf *[]byte
		var dest *[]byte
		var have *bool
		switch string(name) {
		case "key":
			buf, dest, have = &d.kbuf, &key, &haveKey
		case "key_b64":
			buf, b64buf, dest, have = &d.kbuf, &d.kb64, &key, &haveKey
		case "value":
			buf, dest, have = &d.vbuf, &value, &haveValue
		case "value_b64":
			buf, b64buf, dest, have = &d.vbuf, &d.vb64, &value, &haveValue
		case "expires":
			var e []byte
			buf, dest, have = &d.ebuf, &e, &haveExpiry
		default:
			return nil, nil, fmt.Errorf("unknown field %q (want key or key_b64, value or value_b64, expires)", name)
		}
		if *have {
			return nil, nil, fmt.Errorf("field %q: the key or the value is given twice", name)
		}
		*have = true
		if p.peek() != '"' {
			return nil, nil, fmt.Errorf("field %q: want a string", name)
		}
		s, err := p.str(buf)
		if err != nil {
			return nil, nil, fmt.Errorf("field %q: %w", name, err)
		}
		if b64buf != nil {
			if *b64buf, err = base64.StdEncoding.AppendDecode((*b64buf)[:0], s); err != nil {
				return nil, nil, fmt.Errorf("field %q: bad base64: %w", name, err)
			}
			s = *b64buf
		}
		*dest = s
		if have == &haveExpiry {
			t, err := time.Parse(time.RFC3339Nano, string(s))
			if err != nil {
				return nil, nil, fmt.Errorf(`field "expires": want a time such as 2026-01-31T12:00:00.000Z: %w`, err)
			}
			d.expiry = max(t.UnixMilli(), 1)
		}
		p.ws()
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, nil, errors.New("text after the JSON object")
	}
	switch {
	case !haveKey:
		return nil, nil, errors.New(`no "key" or "key_b64" field`)
	case !haveValue:
		return nil, nil, errors.New(`no "value" or "value_b64" field`)
	}
	return key, value, nil
}

// jsonParser reads the small subset of JSON that a pair needs.
type jsonParser struct {
	s []byte
	i int
}

func (p *jsonParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *jsonParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str parses a JSON string. Without escapes it returns a slice of the
// line; otherwise it decodes into *buf (which keeps the grown memory).
func (p *jsonParser) str(buf *[]byte) ([]byte, error) {
	if !p.eat('"') {
		return nil, errors.New("want a string")
	}
	start := p.i
	ascii := true
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return nil, errors.New("invalid UTF-8 in a string (use key_b64/value_b64 for binary data)")
			}
			return s, nil
		case c == '\\':
			b, err := p.strSlow(append((*buf)[:0], p.s[start:p.i]...))
			*buf = b
			return b, err
		case c < 0x20:
			return nil, errors.New("control character in a string")
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return nil, errors.New("unterminated string")
}

func (p *jsonParser) strSlow(buf []byte) ([]byte, error) {
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(buf) {
				return nil, errors.New("invalid UTF-8 in a string (use key_b64/value_b64 for binary data)")
			}
			return buf, nil
		case c < 0x20:
			return buf, errors.New("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return nil, errors.New("unterminated string")
		}
		e := p.s[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, errors.New(`bad \u escape`)
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
					p.i += 2
					r2, ok = p.hex4()
					if !ok {
						return nil, errors.New(`bad \u escape`)
					}
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return nil, errors.New(`unpaired surrogate in a \u escape`)
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, fmt.Errorf(`unknown escape "\%c"`, e)
		}
	}
	return nil, errors.New("unterminated string")
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	p.i += 4
	return r, true
}

// appendHex appends the hex form.
func appendHex(dst, b []byte) []byte { return hex.AppendEncode(dst, b) }

// decodeHex decodes a hex field, appending to dst.
func decodeHex(dst, s []byte) ([]byte, error) {
	out, err := hex.AppendDecode(dst, s)
	if err != nil {
		return dst, fmt.Errorf("bad hex: %w", err)
	}
	return out, nil
}
