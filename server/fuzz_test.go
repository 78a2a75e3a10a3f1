package server

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzParseText: any line parses to a command or a protocol error, never
// a panic; a parsed command's keys are valid memcached keys and its data
// length within the item limit.
func FuzzParseText(f *testing.F) {
	for _, c := range textCases {
		f.Add([]byte(c.in))
	}
	f.Add([]byte("gat 10 a b c"))
	f.Add([]byte("cas k 1 2 3 4 noreply"))
	f.Add([]byte("flush_all 5 noreply"))
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, _, err := parseText(line, nil, 1024)
		if err != nil {
			if _, ok := err.(*protoError); !ok {
				t.Fatalf("%q: error %v is not a protocol error", line, err)
			}
			return
		}
		for _, k := range append(cmd.keys, cmd.key) {
			if k != nil && !validKey(k) {
				t.Fatalf("%q: parsed an invalid key %q", line, k)
			}
		}
		if cmd.bytes < 0 || cmd.bytes > 1024 {
			t.Fatalf("%q: data length %d", line, cmd.bytes)
		}
	})
}

// FuzzTextSession sends arbitrary bytes (text commands, binary requests,
// garbage) on one connection; whatever they do to that connection, the
// server keeps answering another one.
func FuzzTextSession(f *testing.F) {
	for _, c := range textCases {
		f.Add(c.in)
	}
	for _, c := range metaCases {
		f.Add(c.in)
	}
	f.Add("set k 0 0 10\r\nshort\r\n")
	for _, r := range binSequence() {
		f.Add(string(r))
	}
	f.Add("get " + string(make([]byte, 300)) + "\r\n")
	addr, _, _ := startServer(f, f.TempDir(), Config{MaxItemSize: 4096})
	f.Fuzz(func(t *testing.T, in string) {
		_ = exchange(t, addr, in)
		if got := exchange(t, addr, "version\r\n"); got != "VERSION 1.6.18\r\n" {
			t.Fatalf("after %q another connection got %q", in, got)
		}
	})
}

// FuzzParseMeta: any meta line parses to a command or a protocol error,
// never a panic; a parsed command's key is at most 250 bytes, its data
// length within the item limit, and only an ms error swallows data.
func FuzzParseMeta(f *testing.F) {
	for _, c := range metaCases {
		f.Add([]byte(c.in))
	}
	f.Add([]byte("ms k 10 T5 F3 c k O1 q MA N5 E9 C7 I b"))
	f.Add([]byte("ma n N0 J5 D3 MD t c v k O2 q E4 C1"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
			line = line[:i]
		}
		if !isMeta(line) {
			return
		}
		toks, _ := tokens(nil, line)
		m, err := parseMeta(toks, 1024)
		if err != nil {
			pe, ok := err.(*protoError)
			if !ok {
				t.Fatalf("%q: error %v is not a protocol error", line, err)
			}
			if pe.swallow != 0 && (toks[0][1] != 's' || pe.swallow < 2 || pe.swallow > 1<<31+1) {
				t.Fatalf("%q: swallow %d", line, pe.swallow)
			}
			return
		}
		if len(m.key) > maxKeyLen || m.datalen < 0 || m.datalen > 1024 {
			t.Fatalf("%q: key %d bytes, data %d", line, len(m.key), m.datalen)
		}
		if m.code != 'n' && m.code != 'e' && len(m.key) == 0 && !m.binKey {
			t.Fatalf("%q: empty key", line)
		}
	})
}

// FuzzReadBinary: any bytes read as binary requests give requests whose
// parts lie within the frame and the item limit, or an error; never a
// panic, and never a buffer beyond the limit.
func FuzzReadBinary(f *testing.F) {
	for _, r := range binSequence() {
		f.Add(r)
	}
	f.Add(binRequest(opSet, []byte("k"), be32(0, 0), make([]byte, 2000), 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxItem = 1024
		c := &conn{s: &Server{cfg: Config{MaxItemSize: maxItem}}, st: &stats{}, r: bufio.NewReader(bytes.NewReader(in))}
		for {
			req, err := c.readBinary()
			if err != nil {
				return
			}
			if n := len(req.extras) + len(req.key) + len(req.value); n > maxItem+maxKeyLen+64 {
				t.Fatalf("a request of %d bytes passed the limit", n)
			}
			if cap(c.data) > maxItem+maxKeyLen+64 {
				t.Fatalf("buffer of %d bytes", cap(c.data))
			}
		}
	})
}
