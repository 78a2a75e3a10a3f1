package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
)

const dumpHelp = `Prints every live pair of DIR, one per line, in log order (--sort for
key order). The log is read sequentially, segment by segment, in large
reads: a dump costs one pass over the data files, not a read per key.
Expired keys are left out; a key with a TTL carries its expiry (RFC 3339,
UTC, milliseconds), which load restores. DIR is opened read-only.

Formats (all load back with 'marlin load' to the same pairs):
  tsv    key<TAB>value[<TAB>expiry]; printable UTF-8 as is, \\ \t \n \r for backslash,
         tab, newline, CR, and \xHH for any other byte (control characters,
         bytes that are not UTF-8)
  jsonl  {"key":"...","value":"..."[,"expires":"..."]}; "key_b64"/
         "value_b64" (standard base64) when the bytes are not valid UTF-8,
         or always with --base64
  hex    hexkey<TAB>hexvalue[<TAB>expiry]

With --skip-corrupt, dump salvages a damaged directory: damaged stretches
of the log (a bad checksum, an I/O error) are skipped instead of stopping
the dump, and the live records that lay in them are reported, and a directory whose damage makes a normal open fail is
opened in salvage mode (the replay skips damaged ranges). Every readable
pair is printed; a summary of what was skipped goes to stderr, and the exit
status is 1 if anything was skipped (0 if nothing was). A key whose newest
record is unreadable is printed with its newest readable value, if any (or
not at all), so check the summary before trusting the output.

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
	quiet := fs.Bool("quiet", false, "no progress line (shown only when stdout is redirected and stderr is a terminal)")
	skipCorrupt := fs.Bool("skip-corrupt", false, "salvage: skip unreadable records and damaged ranges, report them on stderr (exit 1 if any)")
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
	if *b64 && *format != "jsonl" {
		return fmt.Errorf("--base64 applies to --format jsonl only (not %s): tsv escapes bytes, hex has none to escape", *format)
	}
	enc, err := newPairEncoder(*format, *keysOnly, *b64)
	if err != nil {
		return err
	}
	pfx, err := unescape(nil, []byte(*prefix))
	if err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	var db *engine.DB
	if *skipCorrupt {
		db, err = openSalvage(pos[0], stderr)
	} else {
		db, err = openReadOnly(pos[0], stderr)
	}
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	var skipped engine.SkipReport
	walk := func(fn func(k, v []byte, exp int64) error) error {
		it := db.NewIteratorWith(engine.IterOptions{SkipCorrupt: *skipCorrupt})
		defer it.Close()
		for it.Next() {
			var exp int64
			if e := it.Item().Expiry; !e.IsZero() {
				exp = e.UnixMilli()
			}
			if err := fn(it.Key(), it.Value(), exp); err != nil {
				return err
			}
		}
		skipped = it.Skipped()
		return it.Err()
	}
	out := bufferedOut(stdout)
	var line []byte
	var n int64
	var prog atomic.Int64 // pairs written, for the progress line
	var wrote atomic.Int64
	emit := func(k, v []byte, exp int64) error {
		n++
		line = enc(line[:0], k, v, exp)
		_, err := out.Write(line)
		prog.Store(n)
		wrote.Add(int64(len(line)))
		return err
	}
	var stop func()
	if isTerminal(stdout) {
		stop = func() {} // the pairs themselves show the progress
	} else {
		var keys int64
		if st, err := db.Stats(); err == nil {
			keys = st.Keys
		}
		stop = progressLine(stderr, *quiet, func(el time.Duration) string {
			p := prog.Load()
			return fmt.Sprintf("dump: %s of about %s pairs, %s written, %s, ETA %s", comma(p), comma(keys),
				ibytes(wrote.Load()), rate(p, el), eta(p, keys, el))
		})
	}
	defer stop()
	if *sorted {
		err = dumpSorted(walk, pfx, emit)
	} else {
		err = walk(func(k, v []byte, exp int64) error {
			if !bytes.HasPrefix(k, pfx) {
				return nil
			}
			return emit(k, v, exp)
		})
	}
	stop() // before the summary: the line is erased
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err == nil && *skipCorrupt {
		err = salvageSummary(stderr, db, skipped, n)
	}
	return err
}

// shownSkips is how many skipped records or ranges the summary lists.
const shownSkips = 20

// salvageSummary reports on stderr what a --skip-corrupt dump skipped, and
// returns an error (exit status 1) if anything was.
func salvageSummary(w io.Writer, db *engine.DB, sk engine.SkipReport, n int64) error {
	ranges := db.Salvaged()
	if sk.Count == 0 && len(ranges) == 0 {
		fmt.Fprintf(w, "dump: salvage: %s printed; nothing was unreadable\n", plural(n, "pair", "pairs"))
		return nil
	}
	fmt.Fprintf(w, "dump: salvage: %s printed; skipped %s and %s:\n", plural(n, "pair", "pairs"),
		plural(sk.Count, "unreadable indexed record", "unreadable indexed records"),
		plural(int64(len(ranges)), "damaged range of the log (at open)", "damaged ranges of the log (at open)"))
	for i, r := range ranges {
		if i == shownSkips {
			fmt.Fprintf(w, "  ... and %d more damaged ranges\n", len(ranges)-i)
			break
		}
		fmt.Fprintf(w, "  %s offsets %d to %d: %s\n", r.File, r.Offset, r.Resume, r.Reason)
	}
	for i, r := range sk.Records {
		if i == shownSkips {
			fmt.Fprintf(w, "  ... and %d more unreadable records\n", sk.Count-int64(i))
			break
		}
		fmt.Fprintf(w, "  %s at offset %d: %v\n", r.File, r.Offset, r.Err)
	}
	return fmt.Errorf("salvaged what was readable; %s skipped (see above): the output lacks them",
		plural(sk.Count+int64(len(ranges)), "damaged record or range", "damaged records or ranges"))
}

// dumpSorted collects the pairs under pfx from walk and calls fn in key
// order.
func dumpSorted(walk func(func(k, v []byte, exp int64) error) error, pfx []byte, fn func(k, v []byte, exp int64) error) error {
	type pair struct {
		k, v []byte
		exp  int64
	}
	var pairs []pair
	err := walk(func(k, v []byte, exp int64) error {
		if bytes.HasPrefix(k, pfx) {
			pairs = append(pairs, pair{bytes.Clone(k), bytes.Clone(v), exp})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(pairs, func(a, b pair) int { return bytes.Compare(a.k, b.k) })
	for _, p := range pairs {
		if err := fn(p.k, p.v, p.exp); err != nil {
			return err
		}
	}
	return nil
}

// pairEncoder appends one output line (newline included) for a pair
// whose expiry is exp (Unix ms; 0: none).
type pairEncoder func(dst, k, v []byte, exp int64) []byte

// expiryLayout writes a pair's expiry: RFC 3339 in UTC with milliseconds,
// the engine's resolution.
const expiryLayout = "2006-01-02T15:04:05.000Z07:00"

func appendExpiry(dst []byte, exp int64) []byte {
	return time.UnixMilli(exp).UTC().AppendFormat(dst, expiryLayout)
}

func newPairEncoder(format string, keysOnly, b64 bool) (pairEncoder, error) {
	// tsv and hex: a third field holds the expiry, when there is one.
	third := func(dst []byte, exp int64) []byte {
		if exp != 0 {
			dst = appendExpiry(append(dst, '\t'), exp)
		}
		return append(dst, '\n')
	}
	switch format {
	case "tsv":
		if keysOnly {
			return func(dst, k, _ []byte, _ int64) []byte { return append(appendEscaped(dst, k), '\n') }, nil
		}
		return func(dst, k, v []byte, exp int64) []byte {
			dst = append(appendEscaped(dst, k), '\t')
			return third(appendEscaped(dst, v), exp)
		}, nil
	case "hex":
		if keysOnly {
			return func(dst, k, _ []byte, _ int64) []byte { return append(appendHex(dst, k), '\n') }, nil
		}
		return func(dst, k, v []byte, exp int64) []byte {
			dst = append(appendHex(dst, k), '\t')
			return third(appendHex(dst, v), exp)
		}, nil
	case "jsonl":
		return func(dst, k, v []byte, exp int64) []byte {
			dst = appendJSONField(append(dst, '{'), "key", k, b64)
			if !keysOnly {
				dst = appendJSONField(append(dst, ','), "value", v, b64)
				if exp != 0 {
					dst = append(appendExpiry(append(dst, `,"expires":"`...), exp), '"')
				}
			}
			return append(dst, '}', '\n')
		}, nil
	}
	return nil, errors.New("--format: want tsv, jsonl or hex, not " + fmt.Sprintf("%q", format))
}
