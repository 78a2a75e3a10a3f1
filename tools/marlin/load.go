package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

const loadHelp = `Imports pairs into DIR (a new database with --create) from FILEs, or from stdin when
there is no FILE or FILE is "-". Input is read as a stream, so files larger
than memory load fine. Formats are those of 'marlin dump' (see its --help):
tsv, jsonl or hex; by default each file's format is its extension's (.tsv,
.jsonl, .json, .hex) or else is detected from its first non-empty line ('{'
starts JSON Lines, anything else is tsv, except that a line of two hex
fields, which reads as both hex and tsv, is refused: say --format). Empty
lines are skipped. When a key appears more than once, the
last one wins. Existing keys in DIR are overwritten, others kept.

Pairs are written in batches (sized to fit the segments) with fsync
deferred to every 64 MiB and the end; before load returns, DIR is fsynced
and closed, and every count it prints, on success or on an error, is of
pairs that are durable (fsynced).

A malformed line (or a key or value over the size limits) stops the load
with "FILE:LINE: reason" and exit status 1. Every line before it has been
loaded (and fsynced); nothing from that line on is. --dry-run checks the
whole input first without touching DIR.

--bulk builds a new database instead, several times faster on large inputs:
DIR must not exist or be empty. Records are written in input order and the
index is built by sorting the key hashes (temporary space: about 16 bytes a
pair), in a hidden staging directory beside DIR that is renamed to DIR when
everything is fsynced. All or nothing: on any error (a malformed line
included) DIR is left without a database, and nothing is loaded.`

type loadOptions struct {
	format string
	batch  int
	lim    limitFlags
}

func runLoad(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("load", "[flags] DIR [FILE...]\n\n"+loadHelp,
		"marlin load /var/lib/app/copy pairs.tsv   # pairs.tsv from: marlin dump /var/lib/app/db > pairs.tsv", stderr)
	var o loadOptions
	fs.StringVar(&o.format, "format", "auto", "input format: auto, tsv, jsonl or hex")
	fs.IntVar(&o.batch, "batch", 1000, "pairs per write batch")
	o.lim.register(fs)
	segSize := segmentSizeFlag(fs)
	quiet := fs.Bool("quiet", false, "no progress line on stderr")
	dry := fs.Bool("dry-run", false, "parse and check the input only; DIR is not opened")
	bulk := fs.Bool("bulk", false, "build a new database (DIR absent or empty) by sorting, all or nothing")
	create := fs.Bool("create", false, "create DIR as a new database if it does not hold one (without it, a mistyped DIR is refused)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, -1, "DIR [FILE...]"); err != nil {
		return err
	}
	switch o.format {
	case "auto", "tsv", "jsonl", "hex":
	default:
		return fmt.Errorf("--format: want auto, tsv, jsonl or hex, not %q", o.format)
	}
	if o.batch < 1 {
		return fmt.Errorf("--batch %d: must be at least 1", o.batch)
	}
	dir, files := pos[0], pos[1:]
	if len(files) == 0 {
		files = []string{"-"}
	}
	for _, f := range files {
		if f != "-" {
			if _, err := os.Stat(f); err != nil {
				return err // before DIR is created or opened
			}
		}
	}
	wbuf := fitToSegment(fs, &o.lim, *segSize)
	l := &loader{opts: o, maxBatch: batchBound(*segSize)}
	if *bulk && !*dry {
		eo := engine.Options{FS: loadFS, MaxKeySize: o.lim.maxKey, MaxValueSize: o.lim.maxValue, SegmentSize: *segSize}
		return runBulkLoad(l, dir, files, eo, *quiet, stdout, stderr)
	}
	if !*dry {
		eo := engine.Options{FS: loadFS, Sync: engine.SyncNone, MaxKeySize: o.lim.maxKey, MaxValueSize: o.lim.maxValue,
			SegmentSize: *segSize, WriteBufferSize: wbuf}
		if l.db, err = openWritable(dir, *create, eo, stderr); err != nil {
			return err
		}
		defer func() {
			if l.db != nil {
				l.db.Close()
			}
		}()
	}
	start := time.Now()
	stopProgress := func() {}
	if !*quiet {
		term := isTerminal(stderr)
		stop := ticker(time.Second, func() { l.progress(stderr, start, term) })
		stopProgress = func() {
			stop()
			if term {
				fmt.Fprintln(stderr)
			}
		}
	}
	l.start()
	var lerr error
	for _, name := range files {
		if lerr = l.loadFile(name); lerr != nil {
			break
		}
	}
	werr := l.finish()
	var keys int64
	if l.db != nil {
		// Sync even after a write error: what was written before it becomes
		// durable if the handle still can (a refused batch does not fail
		// the handle; a failed write or fsync does, and then only the pairs
		// of the last successful Sync are durable).
		if serr := l.db.Sync(); serr == nil {
			l.durable.Store(l.written.Load())
		} else if werr == nil {
			werr = serr
		}
		if st, serr := l.db.Stats(); serr == nil {
			keys = st.Keys
		}
		if cerr := l.db.Close(); cerr != nil && werr == nil {
			werr = fmt.Errorf("closing: %w", cerr)
		} else if cerr != nil && cerr.Error() != werr.Error() && !strings.Contains(cerr.Error(), werr.Error()) {
			werr = fmt.Errorf("%w; then closing: %v", werr, cerr)
		}
		l.db = nil
	}
	elapsed := time.Since(start)
	stopProgress()
	// n counts only pairs that are durable: covered by a successful Sync.
	n := l.durable.Load()
	var le *lineError
	switch {
	case werr != nil:
		return fmt.Errorf("writing to %s: %w (%s durable: the pairs before them in the input, fsynced before the error; "+
			"later ones may be missing)", dir, werr, plural(n, "pair", "pairs"))
	case lerr != nil && *dry:
		return fmt.Errorf("%w (%s checked before it)", lerr, plural(n, "pair", "pairs"))
	case errors.As(lerr, &le):
		return fmt.Errorf("%w; stopped there: %s before that line loaded into %s, nothing from that line on",
			lerr, plural(n, "pair", "pairs"), dir)
	case lerr != nil:
		return fmt.Errorf("%w (%s before the error loaded into %s)", lerr, plural(n, "pair", "pairs"), dir)
	case *dry:
		fmt.Fprintf(stdout, "checked %s from %s: no problems\n", plural(n, "pair", "pairs"), plural(int64(len(files)), "file", "files"))
	default:
		expired := ""
		if l.expired > 0 {
			expired = fmt.Sprintf(" (and skipped %s whose expiry had passed)", plural(l.expired, "pair", "pairs"))
		}
		fmt.Fprintf(stdout, "loaded %s from %s into %s in %s (%s pairs/s)%s; it holds %s keys\n",
			plural(n, "pair", "pairs"), plural(int64(len(files)), "file", "files"), dir,
			elapsed.Round(time.Millisecond), comma(int64(float64(n)/max(elapsed.Seconds(), 1e-9))), expired, comma(keys))
	}
	return nil
}

func segmentSizeFlag(fs *flag.FlagSet) *int64 {
	return fs.Int64("segment-size", 0, "size of new segments in bytes (0: the engine's default, 128 MiB)")
}

// loader parses lines into batches while a second goroutine writes the
// previous batch, so that parsing and the engine's work overlap.
type loader struct {
	opts loadOptions
	db   *engine.DB // nil with --dry-run

	cur      *engine.Batch
	curBytes int
	work     chan pendingBatch
	free     chan *engine.Batch
	done     chan struct{}
	werr     error        // the first write error; read after done is closed
	failed   atomic.Bool  // werr is set
	written  atomic.Int64 // pairs written to the engine (maybe not fsynced)
	durable  atomic.Int64 // pairs covered by a successful Sync
	unsynced int          // record bytes written since the last Sync (writer goroutine)
	maxBatch int          // bound on a batch's encoded record bytes
	read     atomic.Int64 // input bytes, updated per batch
	unread   int64        // input bytes not yet added to read
	kb, vb   []byte
	sink     func(k, v []byte) // --bulk: takes each pair instead of batches
	// expiry is the last parsed pair's expiry (Unix ms; 0: none), set by
	// every parse; expired counts the pairs skipped because it had passed.
	expiry   int64
	expired  int64
	json     jsonDecoder
	longLine []byte
}

// A batch must fit in one segment (the engine refuses a larger one with
// ErrBatchTooLarge), so its encoded records are bounded by half the usable
// segment size (half, so that a segment holds at least two batches and a
// roll wastes at most half of one), and by maxBatchBytes. The write buffer
// is no constraint: the engine flushes it while appending a batch.
const maxBatchBytes = 4 << 20

// batchBound returns the bound on a batch's encoded bytes for segments of
// segSize bytes (0: the engine's default).
func batchBound(segSize int64) int {
	if segSize == 0 {
		segSize = defaultSegmentSize
	}
	usable := segSize - segment.HeaderSize - int64(segment.Size(0, 10, false)) /* commit */ - int64(segment.Size(0, 10, false)) /* sync mark */
	return int(max(min(usable/2, maxBatchBytes), 1))
}

// fitToSegment lowers the default value size limit (unless
// --max-value-size was given) so that a record of the largest key and value
// fits in a segment of segSize bytes, which the engine requires, and
// returns the write buffer size to use (0: the engine's default, or the
// segment size if that is smaller).
func fitToSegment(fs *flag.FlagSet, lim *limitFlags, segSize int64) int {
	if segSize == 0 {
		return 0
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "max-value-size" })
	if !given {
		v := int(segSize) - segment.HeaderSize - segment.Size(lim.maxKey, 0, true)
		for v > 0 && int64(segment.HeaderSize+segment.Size(lim.maxKey, v, true)) > segSize {
			v--
		}
		lim.maxValue = max(min(lim.maxValue, v), 0)
	}
	return int(min(segSize, 1<<20))
}

// defaultSegmentSize is the engine's default SegmentSize.
const defaultSegmentSize = 128 << 20

// syncEvery is how many record bytes the writer writes between fsyncs; the
// pairs before the last fsync are the ones reported durable if a later
// write fails.
var syncEvery = 64 << 20 // a variable for tests

func (l *loader) start() {
	const nbuf = 3
	l.work = make(chan pendingBatch, nbuf)
	l.free = make(chan *engine.Batch, nbuf)
	for range nbuf - 1 {
		l.free <- new(engine.Batch)
	}
	l.cur = new(engine.Batch)
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		for p := range l.work {
			b := p.b
			if l.werr == nil {
				var err error
				if l.db != nil {
					err = l.db.Write(b)
				}
				if err == nil {
					l.written.Add(int64(b.Len()))
					l.unsynced += p.bytes
					if l.db == nil {
						l.durable.Store(l.written.Load())
					} else if l.unsynced >= syncEvery {
						if err = l.db.Sync(); err == nil {
							l.durable.Store(l.written.Load())
							l.unsynced = 0
						}
					}
				}
				if err != nil {
					l.werr = err
					l.failed.Store(true)
				}
			}
			b.Reset()
			l.free <- b
		}
	}()
}

// flush hands the current batch to the writer.
func (l *loader) flush() {
	l.read.Add(l.unread)
	l.unread = 0
	if l.cur.Len() == 0 {
		return
	}
	l.work <- pendingBatch{l.cur, l.curBytes}
	l.cur = <-l.free
	l.curBytes = 0
}

// finish writes what is pending and waits for the writer.
func (l *loader) finish() error {
	l.flush()
	close(l.work)
	<-l.done
	return l.werr
}

func (l *loader) add(k, v []byte) {
	if l.sink != nil {
		l.read.Add(l.unread)
		l.unread = 0
		l.sink(k, v)
		return
	}
	var ttl time.Duration
	if l.expiry != 0 {
		// The engine stamps expiries from a TTL when the batch is written:
		// a pair loaded a moment later expires that much later, at most.
		if ttl = time.Until(time.UnixMilli(l.expiry)); ttl <= 0 {
			l.expired++ // expired since it was dumped
			return
		}
	}
	size := segment.Size(len(k), len(v), ttl != 0)
	if l.cur.Len() > 0 && (l.cur.Len() >= l.opts.batch || l.curBytes+size > l.maxBatch) {
		l.flush()
	}
	if ttl != 0 {
		l.cur.PutTTL(k, v, ttl)
	} else {
		l.cur.Put(k, v)
	}
	l.curBytes += size
}

// loadFS is the filesystem load writes through (nil: the OS's); tests
// inject write errors with it.
var loadFS vfs.FS

// pendingBatch is a batch handed to the writer with its encoded size.
type pendingBatch struct {
	b     *engine.Batch
	bytes int
}

// lineError is a malformed input line.
type lineError struct {
	file string
	line int64
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.file, e.line, e.err) }

// loadFile loads one input file ("-": stdin).
func (l *loader) loadFile(name string) error {
	var r io.Reader = stdin
	shown := "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r, shown = f, name
	}
	br := bufio.NewReaderSize(r, 1<<20)
	maxLine := 6*(l.opts.lim.maxKey+l.opts.lim.maxValue) + 1024
	parse := l.parser(l.opts.format)
	if parse == nil {
		parse = l.parser(formatOfName(name))
	}
	var lineNo int64
	for !l.failed.Load() {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			l.longLine = append(l.longLine[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(l.longLine) <= maxLine {
				line, err = br.ReadSlice('\n')
				l.longLine = append(l.longLine, line...)
			}
			if len(l.longLine) > maxLine {
				return &lineError{shown, lineNo + 1, fmt.Errorf("line longer than %d bytes (raise --max-value-size?)", maxLine)}
			}
			line = l.longLine
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading %s: %w", shown, err)
		}
		if len(line) == 0 {
			return nil // EOF
		}
		lineNo++
		l.unread += int64(len(line))
		// (bytes.TrimSuffix costs a call to bytes.Equal per line, which
		// showed in profiles.)
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > 0 {
			if parse == nil {
				f := l.detectFormat(line)
				if f == "" {
					return fmt.Errorf("%s: cannot tell the format: the first line reads as hex (dump --format hex) and as tsv; say --format hex or --format tsv (or name the file .hex or .tsv)", shown)
				}
				parse = l.parser(f)
			}
			l.expiry = 0
			k, v, perr := parse(line)
			if perr == nil {
				perr = l.opts.lim.check(k, v)
			}
			if perr == nil && l.expiry != 0 && l.sink != nil {
				perr = errors.New("the pair has an expiry: --bulk (and a bundle) take no TTLs; load without --bulk")
			}
			if perr != nil {
				return &lineError{shown, lineNo, perr}
			}
			l.add(k, v)
		}
		if err == io.EOF {
			return nil
		}
	}
	return nil // the writer failed; finish reports it
}

// detectFormat decides a file's format from its first non-empty line. A
// line starting with '{' is jsonl unless it holds a tab (a tsv line must;
// a JSON line has none outside strings, where a tab is escaped) and does
// not decode as a pair: tsv passes '{' through, so a tsv dump whose first
// key starts with '{' is tsv (it was taken for broken jsonl).
//
// A line of two fields that are both even-length lowercase hex is what
// dump --format hex writes, and also a valid tsv line: "" (undecided),
// which load refuses, naming --format, rather than load hex text as keys
// (it once did, and get then found nothing).
func (l *loader) detectFormat(line []byte) string {
	if line[0] == '{' {
		if bytes.IndexByte(line, '\t') < 0 {
			return "jsonl"
		}
		if _, _, err := l.json.decode(line); err == nil {
			return "jsonl"
		}
	}
	k, v, ok := bytes.Cut(line, []byte{'\t'})
	v, _, _ = bytes.Cut(v, []byte{'\t'}) // an expiry may follow
	if ok && isHexField(k) && (len(v) == 0 || isHexField(v)) {
		return ""
	}
	return "tsv"
}

// isHexField reports whether b is non-empty, even-length lowercase hex.
func isHexField(b []byte) bool {
	if len(b) == 0 || len(b)%2 != 0 {
		return false
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// formatOfName is the format a file's extension names (.tsv, .jsonl,
// .json, .hex), or "auto".
func formatOfName(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".tsv":
		return "tsv"
	case ".jsonl", ".json", ".ndjson":
		return "jsonl"
	case ".hex":
		return "hex"
	}
	return "auto"
}

// parser returns the line parser for a format, or nil for "auto" (decided
// at the first non-empty line). Keys and values returned alias the line or
// the loader's buffers and are valid until the next call.
func (l *loader) parser(format string) func([]byte) ([]byte, []byte, error) {
	switch format {
	case "tsv":
		return l.parseTSV
	case "hex":
		return l.parseHex
	case "jsonl":
		return func(line []byte) ([]byte, []byte, error) {
			k, v, err := l.json.decode(line)
			l.expiry = l.json.expiry
			return k, v, err
		}
	}
	return nil
}

// cutExpiry splits a tsv or hex value field from the optional third
// field, an expiry in RFC 3339 (as dump writes it), which it stores in
// l.expiry.
func (l *loader) cutExpiry(v []byte) ([]byte, error) {
	v, e, ok := bytes.Cut(v, []byte{'\t'})
	if !ok {
		return v, nil
	}
	if bytes.IndexByte(e, '\t') >= 0 {
		return nil, errors.New(`more than three fields (a tab inside a key or value is written \t)`)
	}
	t, err := time.Parse(time.RFC3339Nano, string(e))
	if err != nil {
		return nil, fmt.Errorf(`third field: want an expiry such as 2026-01-31T12:00:00.000Z (a tab inside a key or value is written \t): %w`, err)
	}
	l.expiry = max(t.UnixMilli(), 1)
	return v, nil
}

func (l *loader) parseTSV(line []byte) (k, v []byte, err error) {
	i := bytes.IndexByte(line, '\t')
	if i < 0 {
		return nil, nil, errors.New("no tab between key and value")
	}
	k, v = line[:i], line[i+1:]
	if v, err = l.cutExpiry(v); err != nil {
		return nil, nil, err
	}
	if bytes.IndexByte(line, '\\') < 0 {
		return k, v, nil
	}
	if l.kb, err = unescape(l.kb[:0], k); err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if l.vb, err = unescape(l.vb[:0], v); err != nil {
		return nil, nil, fmt.Errorf("value: %w", err)
	}
	return l.kb, l.vb, nil
}

func (l *loader) parseHex(line []byte) (k, v []byte, err error) {
	i := bytes.IndexByte(line, '\t')
	if i < 0 {
		return nil, nil, errors.New("no tab between key and value")
	}
	if l.kb, err = decodeHex(l.kb[:0], line[:i]); err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	hv, err := l.cutExpiry(line[i+1:])
	if err != nil {
		return nil, nil, err
	}
	if l.vb, err = decodeHex(l.vb[:0], hv); err != nil {
		return nil, nil, fmt.Errorf("value: %w", err)
	}
	return l.kb, l.vb, nil
}

// progress prints a progress line: pairs loaded, rate, input read.
func (l *loader) progress(w io.Writer, start time.Time, term bool) {
	el := time.Since(start)
	msg := fmt.Sprintf("load: %s pairs, %s, %s read, %s", comma(l.written.Load()), rate(l.written.Load(), el),
		ibytes(l.read.Load()), el.Round(time.Second))
	if term {
		fmt.Fprintf(w, "\r%s\x1b[K", msg)
	} else {
		fmt.Fprintln(w, msg)
	}
}
