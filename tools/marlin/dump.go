package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/marlinkv/marlin/engine"
)

const dumpHelp = `Prints every live pair of DIR, one per line, in no particular order
(--sort for key order). Expired keys are left out, and a key's TTL is not
carried over (the engine's API does not expose it): it dumps, and loads
back, as a plain pair. DIR is opened read-only.

Formats (all load back with 'marlin load' to the same pairs):
  tsv    key<TAB>value; printable UTF-8 as is, \\ \t \n \r for backslash,
         tab, newline, CR, and \xHH for any other byte (control characters,
         bytes that are not UTF-8)
  jsonl  {"key":"...","value":"..."}; "key_b64"/"value_b64" (standard
         base64) when the bytes are not valid UTF-8, or always with --base64
  hex    hexkey<TAB>hexvalue

With --records, SEGMENT is one segment file, and dump lists its raw records
instead (for debugging): offset, kind, sequence number, flags, key and value
lengths, expiry, checksum status and the key; damaged stretches are shown
as BAD with the reason and where the scan resumes.`

func runDump(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("dump", "[flags] DIR\n       marlin dump --records SEGMENT\n\n"+dumpHelp,
		"marlin dump --format jsonl --prefix 'user:' /var/lib/app/db > users.jsonl", stderr)
	format := fs.String("format", "tsv", "output format: tsv, jsonl or hex")
	keysOnly := fs.Bool("keys-only", false, "print keys only")
	prefix := fs.String("prefix", "", "only keys that start with this prefix, in the tsv escaped form (\\xHH for any byte); every key is still scanned")
	b64 := fs.Bool("base64", false, "jsonl: always write key_b64 and value_b64")
	sorted := fs.Bool("sort", false, "print in key order (holds the selected pairs in memory)")
	records := fs.Bool("records", false, "list the raw records of one segment file")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *records {
		if err := wantArgs(pos, 1, 1, "one segment file"); err != nil {
			return err
		}
		return dumpRecords(pos[0], stdout)
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	enc, err := newPairEncoder(*format, *keysOnly, *b64)
	if err != nil {
		return err
	}
	pfx, err := unescape(nil, []byte(*prefix))
	if err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	db, err := openReadOnly(pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	out := bufferedOut(stdout)
	var line []byte
	if *sorted {
		err = dumpSorted(db, pfx, func(k, v []byte) error {
			line = enc(line[:0], k, v)
			_, err := out.Write(line)
			return err
		})
	} else {
		err = db.ForEach(func(k, v []byte) error {
			if !bytes.HasPrefix(k, pfx) {
				return nil
			}
			line = enc(line[:0], k, v)
			_, err := out.Write(line)
			return err
		})
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	return err
}

// dumpSorted collects the pairs under pfx and calls fn in key order.
func dumpSorted(db *engine.DB, pfx []byte, fn func(k, v []byte) error) error {
	type pair struct{ k, v []byte }
	var pairs []pair
	err := db.ForEach(func(k, v []byte) error {
		if bytes.HasPrefix(k, pfx) {
			pairs = append(pairs, pair{bytes.Clone(k), bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(pairs, func(a, b pair) int { return bytes.Compare(a.k, b.k) })
	for _, p := range pairs {
		if err := fn(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

// pairEncoder appends one output line (newline included) for a pair.
type pairEncoder func(dst, k, v []byte) []byte

func newPairEncoder(format string, keysOnly, b64 bool) (pairEncoder, error) {
	switch format {
	case "tsv":
		if keysOnly {
			return func(dst, k, _ []byte) []byte { return append(appendEscaped(dst, k), '\n') }, nil
		}
		return func(dst, k, v []byte) []byte {
			dst = append(appendEscaped(dst, k), '\t')
			return append(appendEscaped(dst, v), '\n')
		}, nil
	case "hex":
		if keysOnly {
			return func(dst, k, _ []byte) []byte { return append(appendHex(dst, k), '\n') }, nil
		}
		return func(dst, k, v []byte) []byte {
			dst = append(appendHex(dst, k), '\t')
			return append(appendHex(dst, v), '\n')
		}, nil
	case "jsonl":
		return func(dst, k, v []byte) []byte {
			dst = appendJSONField(append(dst, '{'), "key", k, b64)
			if !keysOnly {
				dst = appendJSONField(append(dst, ','), "value", v, b64)
			}
			return append(dst, '}', '\n')
		}, nil
	}
	return nil, errors.New("--format: want tsv, jsonl or hex, not " + fmt.Sprintf("%q", format))
}
