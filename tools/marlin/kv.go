package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/marlinkv/marlin/engine"
)

// keyFlags say how KEY and VALUE arguments (and get's output) are written.
type keyFlags struct{ hex, escaped bool }

// register adds --hex and --escaped; args names the arguments they apply
// to ("KEY" or "KEY and VALUE"); get also prints the value in hex.
func (k *keyFlags) register(fs *flag.FlagSet, args string, hexOutput bool) {
	usage := args + " in hex"
	if hexOutput {
		usage += "; print the value in hex"
	}
	fs.BoolVar(&k.hex, "hex", false, usage)
	fs.BoolVar(&k.escaped, "escaped", false, args+" in dump's tsv escaped form (\\t \\n \\\\ \\xHH), so that a key copied from 'marlin dump' works as is")
}

func (k *keyFlags) decode(what, s string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case k.hex && k.escaped:
		return nil, errors.New("--hex and --escaped exclude each other")
	case k.hex:
		b, err = decodeHex(nil, []byte(s))
	case k.escaped:
		b, err = unescape(nil, []byte(s))
	default:
		return []byte(s), nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// decodeAll decodes every argument as a KEY.
func (k *keyFlags) decodeAll(args []string) ([][]byte, error) {
	keys := make([][]byte, 0, len(args))
	for _, a := range args {
		b, err := k.decode("KEY", a)
		if err != nil {
			return nil, err
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// keyNotFound is the error of a command asked for an absent key.
func keyNotFound(key []byte) error {
	return fmt.Errorf("key \"%s\" not found", appendEscaped(nil, key))
}

// valueOut is how get and bundle get print one value: --raw, --hex (of
// keyFlags) or --escaped-value, by default escaped on a terminal and raw
// when piped.
type valueOut struct{ raw, escaped bool }

func (o *valueOut) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.raw, "raw", false, "write the value's bytes exactly, without a newline (the default when stdout is not a terminal)")
	fs.BoolVar(&o.escaped, "escaped-value", false, "print the value in dump's tsv escaped form and a newline (the default on a terminal)")
}

// check refuses two forms at once.
func (o *valueOut) check(kf keyFlags) error {
	if o.raw && (kf.hex || o.escaped) || kf.hex && o.escaped {
		return errors.New("--raw, --hex and --escaped-value exclude each other")
	}
	return nil
}

// write prints v in the chosen form.
func (o *valueOut) write(w io.Writer, v []byte, kf keyFlags) error {
	var out []byte
	switch {
	case o.raw:
		out = v
	case kf.hex:
		out = append(appendHex(nil, v), '\n')
	case o.escaped || isTerminal(w):
		out = append(appendEscaped(nil, v), '\n')
	default:
		out = v // piped: the bytes as stored
	}
	_, err := w.Write(out)
	return err
}

func runGet(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("get", "[flags] DIR KEY [KEY...]\n\nPrints KEY's value. On a terminal: in dump's tsv escaped form and a newline\n"+
		"(so any byte is visible and safe); piped or redirected: the bytes exactly as\n"+
		"stored, without a newline (so 'marlin get DIR KEY | jq .' works), as redis-cli\n"+
		"does. --raw and --escaped-value choose either form anywhere; --hex prints hex\n"+
		"and a newline. Exits 1 if KEY is absent. DIR is opened read-only.\n\n"+
		"With several KEYs, prints a line per key present as 'marlin dump' does\n"+
		"(key<TAB>value, escaped; hex with --hex), says on stderr which are absent,\n"+
		"and exits 1 if any is.",
		"marlin get /var/lib/app/db user:42", stderr)
	var kf keyFlags
	kf.register(fs, "KEY", true)
	var vo valueOut
	vo.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, -1, "DIR KEY [KEY...]"); err != nil {
		return err
	}
	key, err := kf.decode("KEY", pos[1])
	if err != nil {
		return err
	}
	if err := vo.check(kf); err != nil {
		return err
	}
	if len(pos) > 2 && (vo.raw || vo.escaped) {
		return errors.New("--raw and --escaped-value apply to one KEY; several print dump's lines")
	}
	db, err := openReadOnly(pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	if len(pos) > 2 {
		return getMany(db, pos[1:], kf, stdout, stderr)
	}
	v, err := db.Get(key)
	if errors.Is(err, engine.ErrNotFound) {
		return keyNotFound(key)
	}
	if err != nil {
		return err
	}
	return vo.write(stdout, v, kf)
}

func runPut(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("put", "[flags] DIR KEY VALUE\n\nSets KEY to VALUE (VALUE \"-\": read the value from stdin, byte for byte)\n"+
		"and returns once it is durable. DIR is created if needed.",
		"marlin put --ttl 30m /var/lib/app/db session:9f2 '{\"user\":42}'", stderr)
	var kf keyFlags
	kf.register(fs, "KEY and VALUE", false)
	var lim limitFlags
	lim.register(fs)
	segSize := segmentSizeFlag(fs)
	ttl := fs.Duration("ttl", 0, "expire the key after this long (e.g. 90s, 30m, 24h; 0: never)")
	create := fs.Bool("create", false, "create DIR as a new database if it does not hold one (without it, a mistyped DIR is refused)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 3, 3, "DIR KEY VALUE"); err != nil {
		return err
	}
	if *ttl < 0 {
		return fmt.Errorf("--ttl %v: must be positive", *ttl)
	}
	key, err := kf.decode("KEY", pos[1])
	if err != nil {
		return err
	}
	var value []byte
	if pos[2] == "-" {
		if value, err = io.ReadAll(io.LimitReader(stdin, int64(lim.maxValue)+1)); err != nil {
			return fmt.Errorf("reading the value from stdin: %w", err)
		}
	} else if value, err = kf.decode("VALUE", pos[2]); err != nil {
		return err
	}
	if err := lim.check(key, value); err != nil {
		return err
	}
	db, err := openWritable(pos[0], *create, engine.Options{MaxKeySize: lim.maxKey, MaxValueSize: lim.maxValue, SegmentSize: *segSize}, stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	if *ttl > 0 {
		return db.PutTTL(key, value, *ttl)
	}
	return db.Put(key, value)
}

func runDelete(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("delete", "[flags] DIR KEY\n\nDeletes KEY and returns once that is durable. Deleting an absent key is not\nan error (a note is printed on stderr).",
		"marlin delete /var/lib/app/db session:9f2", stderr)
	var kf keyFlags
	kf.register(fs, "KEY", false)
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
	if len(key) == 0 {
		return engine.ErrEmptyKey // as put says it
	}
	db, err := openWritable(pos[0], false, engine.Options{MaxKeySize: 65535}, stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	had, err := db.Has(key)
	if err != nil {
		return err
	}
	if !had {
		fmt.Fprintf(stderr, "marlin delete: key \"%s\" was not present\n", appendEscaped(nil, key))
		return nil
	}
	return db.Delete(key)
}

// getMany prints the pairs of several keys as dump lines (tsv, or hex
// with --hex), in the order given; absent keys are named on stderr and
// make the exit status 1.
func getMany(db *engine.DB, args []string, kf keyFlags, stdout, stderr io.Writer) error {
	format := "tsv"
	if kf.hex {
		format = "hex"
	}
	enc, err := newPairEncoder(format, false, false)
	if err != nil {
		return err
	}
	out := bufferedOut(stdout)
	var line []byte
	missing := 0
	for _, a := range args {
		key, err := kf.decode("KEY", a)
		if err != nil {
			return err
		}
		v, it, err := db.AppendItem(nil, key)
		if errors.Is(err, engine.ErrNotFound) {
			missing++
			fmt.Fprintf(stderr, "marlin get: key \"%s\" not found\n", appendEscaped(nil, key))
			continue
		}
		if err != nil {
			return err
		}
		var exp int64
		if !it.Expiry.IsZero() {
			exp = it.Expiry.UnixMilli()
		}
		line = enc(line[:0], key, v, exp)
		if _, err := out.Write(line); err != nil {
			return err
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if missing > 0 {
		return errSilent
	}
	return nil
}
