package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// The commands that ask about keys without printing values: ttl, exists
// and keys. Each opens DIR read-only.

func runTTL(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("ttl", "[flags] DIR KEY\n\nPrints how long KEY has left before it expires, and when that is (UTC), or\n"+
		"\"no expiry\". With --seconds, prints the whole seconds left, or -1 for no\n"+
		"expiry (as redis-cli's TTL). Exits 1 if KEY is absent or expired.",
		"marlin ttl /var/lib/app/db session:9f2", stderr)
	var kf keyFlags
	kf.register(fs, "KEY", false)
	secs := fs.Bool("seconds", false, "print whole seconds left (-1: no expiry)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, 2, "DIR KEY"); err != nil {
		return err
	}
	key, err := kf.decode("KEY", pos[1])
	if err != nil {
		return err
	}
	db, err := openReadOnly(pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	exp, err := db.Expiry(key)
	if errors.Is(err, engine.ErrNotFound) {
		return keyNotFound(key)
	}
	if err != nil {
		return err
	}
	left := time.Until(exp)
	switch {
	case exp.IsZero() && *secs:
		_, err = fmt.Fprintln(stdout, -1)
	case exp.IsZero():
		_, err = fmt.Fprintln(stdout, "no expiry")
	case *secs:
		_, err = fmt.Fprintln(stdout, int64(max(left, 0)/time.Second))
	default:
		_, err = fmt.Fprintf(stdout, "%s (at %s)\n", max(left, 0).Round(time.Second), exp.UTC().Format(time.RFC3339))
	}
	return err
}

func runExists(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("exists", "[flags] DIR KEY...\n\nPrints how many of the KEYs are present (not expired), as redis-cli's\n"+
		"EXISTS does, and exits 0 if all of them are, 1 if any is not.",
		"marlin exists /var/lib/app/db user:42 user:43", stderr)
	var kf keyFlags
	kf.register(fs, "KEYs", false)
	quiet := fs.Bool("quiet", false, "print nothing: the exit status says it")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, -1, "DIR KEY..."); err != nil {
		return err
	}
	keys, err := kf.decodeAll(pos[1:])
	if err != nil {
		return err
	}
	db, err := openReadOnly(pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	n := 0
	for _, k := range keys {
		ok, err := db.Has(k)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
	}
	if !*quiet {
		if _, err := fmt.Fprintln(stdout, n); err != nil {
			return err
		}
	}
	if n < len(keys) {
		return errSilent
	}
	return nil
}

func runKeys(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("keys", "[flags] DIR\n\nPrints the live keys, one per line in dump's tsv escaped form, in log order.\n"+
		"--match keeps those whose bytes match GLOB: * any bytes, ? one byte,\n"+
		"[abc] [a-z] [^abc] a byte in (or not in) a set, \\x the byte x. Every key\n"+
		"is still read (one sequential pass over the log), so --limit ends it early.",
		"marlin keys --match 'user:*' --limit 10 /var/lib/app/db", stderr)
	match := fs.String("match", "*", "only keys matching this glob")
	limit := fs.Int64("limit", 0, "stop after this many keys (0: all)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	if err := checkGlob([]byte(*match)); err != nil {
		return fmt.Errorf("--match %q: %w", *match, err)
	}
	if *limit < 0 {
		return fmt.Errorf("--limit %d: must not be negative", *limit)
	}
	db, err := openReadOnly(pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	w := bufio.NewWriterSize(stdout, 64<<10)
	var line []byte
	var n int64
	var iterErr error
	for k := range db.All(&iterErr) {
		if !globMatch([]byte(*match), k) {
			continue
		}
		line = append(appendEscaped(line[:0], k), '\n')
		if _, err := w.Write(line); err != nil {
			return err
		}
		if n++; *limit > 0 && n >= *limit {
			break
		}
	}
	if iterErr != nil {
		return iterErr
	}
	return w.Flush()
}

// errSilent is a failure already reported by the output (exit status 1,
// no message).
var errSilent = errors.New("")

// checkGlob reports a malformed pattern: an unterminated set or a
// trailing backslash.
func checkGlob(p []byte) error {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i++; i == len(p) {
				return errors.New("ends in a lone backslash")
			}
		case '[':
			_, next, ok := globSet(p, i, 0)
			if !ok {
				return errors.New("a [ without its ]")
			}
			i = next - 1
		}
	}
	return nil
}

// globMatch reports whether s matches the pattern p (see runKeys; p is
// checked by checkGlob). It backtracks to the last star only, so it runs
// in O(len(p)·len(s)).
func globMatch(p, s []byte) bool {
	pi, si := 0, 0
	star, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				star, starS = pi, si
				pi++
				continue
			case '?':
				pi++
				si++
				continue
			case '[':
				if in, next, ok := globSet(p, pi, s[si]); ok && in {
					pi, si = next, si+1
					continue
				}
			case '\\':
				if pi+1 < len(p) && p[pi+1] == s[si] {
					pi, si = pi+2, si+1
					continue
				}
			default:
				if c == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		pi, starS = star+1, starS+1
		si = starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// globSet matches b against the set that starts at p[i] ('['): whether b
// is in it, the index after its ']', and whether the set is well formed.
func globSet(p []byte, i int, b byte) (in bool, next int, ok bool) {
	i++
	negate := i < len(p) && p[i] == '^'
	if negate {
		i++
	}
	first := true
	for i < len(p) {
		c := p[i]
		if c == ']' && !first {
			return in != negate, i + 1, true
		}
		first = false
		if c == '\\' && i+1 < len(p) {
			i++
			c = p[i]
		}
		lo, hi := c, c
		if i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']' {
			hi = p[i+2]
			if hi == '\\' && i+3 < len(p) {
				hi = p[i+3]
				i++
			}
			i += 2
		}
		if lo <= b && b <= hi {
			in = true
		}
		i++
	}
	return false, i, false
}
