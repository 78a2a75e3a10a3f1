package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// 'marlin bundle': build, inspect, verify and read bundles (package
// bundle, docs/bundle.md).

var bundleCommands = map[string]command{
	"build":   {"build a bundle from a data directory, dump files or stdin", runBundleBuild},
	"inspect": {"describe a bundle: mode, counts, sections, bytes per key, seed", runBundleInspect},
	"verify":  {"read a whole bundle and check every checksum and entry", runBundleVerify},
	"get":     {"print one key's value", runBundleGet},
	"dump":    {"print every pair (tsv, jsonl, hex), in no particular order", runBundleDump},
	"base":    {"show or switch the base bundle under a data directory", runBundleBase},
	"bench":   {"build and read bundles of generated pairs beside a Go map (make bench-bundle)", runBundleBench},
}

func runBundle(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: marlin bundle <command> [flags] [args]\n\n"+
			"A bundle is an immutable file of pairs, built once, read through a shared\n"+
			"read-only mmap by any number of processes (docs/bundle.md).\n\ncommands:")
		names := make([]string, 0, len(bundleCommands))
		for n := range bundleCommands {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stderr, "  %-8s %s\n", n, bundleCommands[n].summary)
		}
		if len(args) == 0 {
			return errors.New("want a command")
		}
		return flag.ErrHelp
	}
	cmd, ok := bundleCommands[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q (see 'marlin bundle --help')", args[0])
	}
	err := cmd.run(args[1:], stdout, stderr)
	if err != nil && strings.HasPrefix(err.Error(), "bundle: ") {
		err = bundleError{err} // main prefixes "marlin bundle: "
	}
	return err
}

// bundleError drops the "bundle: " that package bundle's errors start
// with; errors.Is still sees the wrapped error.
type bundleError struct{ err error }

func (e bundleError) Error() string { return strings.TrimPrefix(e.err.Error(), "bundle: ") }
func (e bundleError) Unwrap() error { return e.err }

const bundleBuildHelp = `Builds the bundle FILE from SRC: a Marlin data directory (opened read-only,
like 'marlin dump': a directory open for writing is refused), or files in
the formats of 'marlin dump' (tsv, jsonl, hex; see its --help), or stdin
when SRC is "-" or absent. Input far larger than memory is fine: pairs are
held in memory up to --memory, then sorted and written to runs in
--temp-dir, which are merged at the end (they need about the input's size
in free space). When a key appears more than once the last one wins, or
the build fails with --strict.

The file is written to a hidden temporary name beside FILE, fsynced, and
renamed: FILE is either the old file or the complete new one, even after a
crash or an interrupt (Ctrl-C stops the build and removes the temporary
files; a killed build leaves them as .FILE.*.tmp and .FILE.*.scratch).

When SRC is a data directory with a base bundle under it (marlin serve
--base, engine Options.Base), the build is a fold: base and delta are
merged into FILE (-o; default: a new file in the directory), the directory
switches to it as its base (its BASE file is replaced by rename), and the
delta drops what the new base holds. Pairs with a TTL stay in the delta.
--switch does the same for a directory without a base (its pairs become
its first base); --switch=false only exports. A fold opens the directory
for writing: stop a marlin serve that holds it and use its --admin
endpoint (POST /fold) instead. --value-format items is for a directory
marlin serve writes (its values are items with flags and CAS): the first
fold needs it; later folds keep the base's format.

--approximate stores a 64-bit hash and a 16-bit check of each key instead
of the key: every entry is 16 bytes whatever the key's length, 'bundle dump'
cannot list the keys, and a lookup of a key that was never added finds a
value with probability n / 2^80 (docs/bundle.md).`

func runBundleBuild(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("bundle build", "[flags] SRC... -o FILE\n\n"+bundleBuildHelp,
		"marlin bundle build /var/lib/app/db -o users.bundle --memory 4GiB", stderr)
	out := fs.String("o", "", "the bundle to write (required, but for a fold)")
	doSwitch := fs.Bool("switch", false, "SRC is a data directory: fold it into FILE and make FILE its base (the default when it has one)")
	valueFmt := fs.String("value-format", "", "with a fold: plain, or items for a directory marlin serve writes (default: the base's; plain)")
	approx := fs.Bool("approximate", false, "store hashes of the keys, not the keys")
	strict := fs.Bool("strict", false, "a key given twice is an error")
	memory := fs.String("memory", "1GiB", "memory for sorting (at least 256KiB); beyond it, sorted runs go to disk")
	tempDir := fs.String("temp-dir", "", "directory for the sorted runs (default: FILE's directory)")
	format := fs.String("format", "auto", "input format of files: auto, tsv, jsonl or hex")
	seed := fs.Uint64("seed", 0, "hash seed (0: random); the same input and seed give the same file")
	quiet := fs.Bool("quiet", false, "no progress line on stderr (there is one only when stderr is a terminal)")
	var lim limitFlags
	fs.IntVar(&lim.maxKey, "max-key-size", bundle.MaxKeyLen, "largest key accepted from files, in bytes")
	fs.IntVar(&lim.maxValue, "max-value-size", 64<<20, "largest value accepted from files, in bytes")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switchSet := false
	fs.Visit(func(f *flag.Flag) { switchSet = switchSet || f.Name == "switch" })
	if len(pos) == 1 && !switchSet {
		if fi, err := os.Stat(pos[0]); err == nil && fi.IsDir() {
			if _, err := os.Stat(filepath.Join(pos[0], engine.BaseFileName)); err == nil {
				*doSwitch = true
			}
		}
	}
	if *doSwitch {
		if *approx || *strict || *seed != 0 {
			return errors.New("a fold (--switch) cannot be --approximate, --strict or seeded: a base stores its keys")
		}
		return runFold(pos, *out, *valueFmt, *memory, *tempDir, *quiet, stdout, stderr)
	}
	if *valueFmt != "" {
		return errors.New("--value-format is for a fold (--switch)")
	}
	if *out == "" {
		return errors.New("want -o FILE (see --help)")
	}
	if lim.maxKey > bundle.MaxKeyLen {
		return fmt.Errorf("--max-key-size %d: a bundle's keys are at most %d bytes", lim.maxKey, bundle.MaxKeyLen)
	}
	switch *format {
	case "auto", "tsv", "jsonl", "hex":
	default:
		return fmt.Errorf("--format: want auto, tsv, jsonl or hex, not %q", *format)
	}
	mem, err := humanize.ParseBytes(*memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	src, err := bundleSource(pos, *format, lim)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := bundle.NewBuilder(nil, *out, &bundle.BuildOptions{Approximate: *approx, Strict: *strict,
		MemoryLimit: int64(min(mem, math.MaxInt64)), TempDir: *tempDir, Seed: *seed, Cancel: ctx.Done()})
	if err != nil {
		return err
	}
	defer b.Abort() // after a successful Finish it does nothing
	start := time.Now()
	var read func() int64 // input bytes read so far, if known
	if src.l != nil {
		read = src.l.read.Load
	}
	stopProgress := progressLine(stderr, *quiet, func(el time.Duration) string { return bundleProgress(b.Progress(), read, el) })
	defer stopProgress()
	if err := src.feed(b, stderr); err != nil {
		if errors.Is(err, bundle.ErrCanceled) {
			return errors.New("interrupted: nothing was written to " + *out)
		}
		return err
	}
	if err := b.Finish(); err != nil {
		if errors.Is(err, bundle.ErrCanceled) {
			return errors.New("interrupted: nothing was written to " + *out)
		}
		return fmt.Errorf("%w (%s was not written)", err, *out)
	}
	stopProgress()
	st := b.Stats()
	el := time.Since(start)
	fmt.Fprintf(stdout, "built %s: %s from %s in %s (%s); %s, %.2f bytes per pair",
		*out, plural(st.Entries, "pair", "pairs"), src.describe(), el.Round(time.Millisecond),
		rate(st.Added, el), ibytes(st.FileSize), float64(st.FileSize)/math.Max(float64(st.Entries), 1))
	if st.Duplicates > 0 {
		fmt.Fprintf(stdout, "; %s replaced by a later value", plural(st.Duplicates, "duplicate", "duplicates"))
	}
	if st.Runs > 0 {
		fmt.Fprintf(stdout, "; sorted in %s on disk (%s read back)", plural(int64(st.Runs), "run", "runs"), ibytes(st.ScratchRead))
	}
	fmt.Fprintln(stdout)
	return nil
}

// bundleProgress is the progress line of a build.
func bundleProgress(p bundle.Progress, read func() int64, el time.Duration) string {
	msg := fmt.Sprintf("bundle build: %s: %s pairs added (%s)", p.Phase, comma(p.Added), rate(p.Added, el))
	if read != nil {
		msg += ", " + ibytes(read()) + " read"
	}
	if p.Runs > 0 {
		msg += fmt.Sprintf(", %s on disk", plural(int64(p.Runs), "run", "runs"))
	}
	if p.Written > 0 {
		msg += fmt.Sprintf(", %s written (%s)", comma(p.Written), pct(p.Written, p.Added))
	}
	return msg + ", " + el.Round(time.Second).String()
}

// buildSource is where build reads pairs: a data directory, or files.
type buildSource struct {
	dir   string   // a Marlin data directory, or ""
	files []string // dump files ("-": stdin)
	l     *loader  // parses the files (load's parsers), nil for a directory
}

func bundleSource(pos []string, format string, lim limitFlags) (*buildSource, error) {
	if len(pos) == 0 {
		pos = []string{"-"}
	}
	s := buildSource{l: &loader{opts: loadOptions{format: format, lim: lim}}}
	for _, p := range pos {
		if p == "-" {
			s.files = append(s.files, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			if len(pos) > 1 {
				return nil, fmt.Errorf("%s is a directory: a data directory is the only SRC of its build", p)
			}
			if err := checkDataDir(p); err != nil {
				return nil, err
			}
			s.dir, s.l = p, nil
			continue
		}
		s.files = append(s.files, p)
	}
	return &s, nil
}

func (s *buildSource) describe() string {
	if s.dir != "" {
		return s.dir
	}
	if len(s.files) == 1 && s.files[0] == "-" {
		return "stdin"
	}
	return plural(int64(len(s.files)), "file", "files")
}

// feed adds every pair of the source to b. A data directory is read in
// one pass (db.ForEach). Files are parsed by load's parsers in a goroutine
// of their own that hands chunks of pairs over (load --bulk's pairFeed),
// so parsing and sorting use both cores.
func (s *buildSource) feed(b *bundle.Builder, stderr io.Writer) (err error) {
	if s.dir != "" {
		db, err := openReadOnly(s.dir, stderr)
		if err != nil {
			return err
		}
		defer closeDB(db, &err)
		return tidy(db.ForEach(b.Add))
	}
	l, feed := s.l, newPairFeed()
	l.sink = feed.add
	go func() {
		var err error
		for _, name := range s.files {
			if err = l.loadFile(name); err != nil {
				break
			}
		}
		feed.finish(err)
	}()
	defer func() {
		l.failed.Store(true) // the parser stops at its next line
		feed.stop()
	}()
	for {
		k, v, err := feed.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := b.Add(k, v); err != nil {
			return err
		}
	}
}

// openBundle opens FILE for the reading subcommands.
func openBundle(path string, verifyEntries bool) (*bundle.Reader, error) {
	return bundle.Open(nil, path, &bundle.OpenOptions{VerifyEntries: verifyEntries})
}

// bundleInfo is what inspect prints (--json prints it as is).
type bundleInfo struct {
	File              string  `json:"file"`
	FormatVersion     int     `json:"format_version"`
	Mode              string  `json:"mode"` // exact or approximate
	Pairs             int64   `json:"pairs"`
	KeyBytes          int64   `json:"key_bytes"`
	ValueBytes        int64   `json:"value_bytes"`
	FileBytes         int64   `json:"file_bytes"`
	BytesPerKey       float64 `json:"bytes_per_key"`
	DataBytes         int64   `json:"data_bytes"`
	EntryBytes        int64   `json:"entry_bytes"`
	FenceBytes        int64   `json:"fence_bytes"`
	FenceBuckets      int64   `json:"fence_buckets"`
	HotBytesPerKey    float64 `json:"hot_bytes_per_key"` // entries and fences: what lookups keep in RAM
	FalsePositiveRate float64 `json:"false_positive_rate"`
	Hash              string  `json:"hash"`
	Seed              string  `json:"seed"`
	Built             string  `json:"built"`
}

func runBundleInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle inspect", "[flags] FILE\n\nDescribes FILE from its footer (it reads nothing else).",
		"marlin bundle inspect users.bundle", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "FILE"); err != nil {
		return err
	}
	r, err := openBundle(pos[0], false)
	if err != nil {
		return err
	}
	defer r.Close()
	in := r.Info()
	rep := bundleInfo{File: pos[0], FormatVersion: in.Version, Mode: "exact", Pairs: in.Count,
		KeyBytes: in.KeyBytes, ValueBytes: in.ValueBytes, FileBytes: in.FileSize, BytesPerKey: in.BytesPerKey(),
		DataBytes: in.DataBytes, EntryBytes: in.EntryBytes, FenceBytes: in.FenceBytes, FenceBuckets: 1 << in.FenceBits,
		FalsePositiveRate: in.FalsePositiveRate(), Hash: "farmhash64", Seed: fmt.Sprintf("%#016x", in.Seed),
		Built: in.Built.UTC().Format(time.RFC3339)}
	if in.Approximate {
		rep.Mode = "approximate"
	}
	if in.Count > 0 {
		rep.HotBytesPerKey = float64(in.EntryBytes+in.FenceBytes) / float64(in.Count)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	avg := func(n int64) string {
		if in.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(n)/float64(in.Count))
	}
	w := &strings.Builder{}
	fmt.Fprintf(w, "bundle %s (format version %d)\n", rep.File, rep.FormatVersion)
	if in.Approximate {
		fmt.Fprintf(w, "  mode         approximate: key hashes only; an absent key finds a value with probability %.3g\n", rep.FalsePositiveRate)
	} else {
		fmt.Fprintf(w, "  mode         exact: keys stored\n")
	}
	fmt.Fprintf(w, "  pairs        %s\n", comma(in.Count))
	fmt.Fprintf(w, "  keys         %s (%s bytes on average)\n", ibytes(in.KeyBytes), avg(in.KeyBytes))
	fmt.Fprintf(w, "  values       %s (%s bytes on average)\n", ibytes(in.ValueBytes), avg(in.ValueBytes))
	fmt.Fprintf(w, "  file         %s, %.2f bytes per pair\n", ibytes(in.FileSize), rep.BytesPerKey)
	fmt.Fprintf(w, "    data       %s (keys, values, a 4-byte checksum each)\n", ibytes(in.DataBytes))
	fmt.Fprintf(w, "    entries    %s (16 bytes per pair)\n", ibytes(in.EntryBytes))
	fmt.Fprintf(w, "    fences     %s (%s buckets of %s pairs on average)\n", ibytes(in.FenceBytes), comma(rep.FenceBuckets),
		fmt.Sprintf("%.1f", float64(in.Count)/float64(rep.FenceBuckets)))
	fmt.Fprintf(w, "  hot part     %s, %.2f bytes per pair (entries and fences: keep them in RAM for one disk read per lookup)\n",
		ibytes(in.EntryBytes+in.FenceBytes), rep.HotBytesPerKey)
	fmt.Fprintf(w, "  hash         %s, seed %s\n", rep.Hash, rep.Seed)
	fmt.Fprintf(w, "  built        %s\n", rep.Built)
	_, err = io.WriteString(stdout, w.String())
	return err
}

func runBundleVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle verify", "[flags] FILE\n\nReads all of FILE and checks every section's checksum, every record's\n"+
		"checksum and bounds, the entries' order, each stored key's hash, and the\nfences. Exit status 1 on the first problem.",
		"marlin bundle verify users.bundle", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "FILE"); err != nil {
		return err
	}
	start := time.Now()
	r, err := openBundle(pos[0], true)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok: %s, %s, every checksum and entry checked in %s\n", pos[0],
		plural(int64(r.Len()), "pair", "pairs"), ibytes(r.Info().FileSize), time.Since(start).Round(time.Millisecond))
	return nil
}

func runBundleGet(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle get", "[flags] FILE KEY\n\nPrints KEY's value as 'marlin get' does: on a terminal in dump's tsv escaped\n"+
		"form and a newline; piped or redirected, the bytes exactly as stored; --raw,\n"+
		"--escaped-value and --hex choose. Exits 1 if KEY is absent. In an\n"+
		"approximate bundle an absent key may (rarely) print another key's value.",
		"marlin bundle get users.bundle user:42", stderr)
	var kf keyFlags
	kf.register(fs, "KEY", true)
	var vo valueOut
	vo.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, 2, "FILE KEY"); err != nil {
		return err
	}
	key, err := kf.decode("KEY", pos[1])
	if err != nil {
		return err
	}
	if err := vo.check(kf); err != nil {
		return err
	}
	r, err := openBundle(pos[0], false)
	if err != nil {
		return err
	}
	defer r.Close()
	v, err := r.AppendValue(nil, key)
	if errors.Is(err, bundle.ErrNotFound) {
		return keyNotFound(key)
	}
	if err != nil {
		return err
	}
	return vo.write(stdout, v, kf)
}

func runBundleDump(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle dump", "[flags] FILE\n\nPrints every pair of FILE in the formats of 'marlin dump' (which 'marlin\n"+
		"load' and 'marlin bundle build' read back), in the file's order (by hash).\nEach record's checksum is checked. An approximate bundle has no keys to print.",
		"marlin bundle dump --format jsonl users.bundle > users.jsonl", stderr)
	format := fs.String("format", "tsv", "output format: tsv, jsonl or hex")
	keysOnly := fs.Bool("keys-only", false, "print keys only")
	b64 := fs.Bool("base64", false, "jsonl: always write key_b64 and value_b64")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "FILE"); err != nil {
		return err
	}
	enc, err := newPairEncoder(*format, *keysOnly, *b64)
	if err != nil {
		return err
	}
	r, err := openBundle(pos[0], false)
	if err != nil {
		return err
	}
	defer r.Close()
	if r.Approximate() {
		return fmt.Errorf("%s is approximate: it stores hashes of its keys, not the keys, so there is nothing to dump", pos[0])
	}
	out := bufferedOut(stdout)
	var line []byte
	err = r.ForEach(func(k, v []byte) error {
		line = enc(line[:0], k, v, 0) // a bundle has no TTLs
		_, err := out.Write(line)
		return err
	})
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	return err
}
