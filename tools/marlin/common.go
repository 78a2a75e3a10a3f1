package main

// Shared by the data subcommands: opening a directory (read-only or for
// writing) with clear messages, argument parsing that allows flags after
// the positional arguments, and output helpers.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
)

// parseArgs parses flags that may appear before, between or after the
// positional arguments (the standard flag package stops at the first
// positional one). "--" ends the flags: everything after it is positional,
// so a key starting with '-' is given as "marlin get DIR -- -key".
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, lo, hi int, synopsis string) error {
	if len(pos) < lo || (hi >= 0 && len(pos) > hi) {
		return fmt.Errorf("want %s (got %d argument(s); see --help)", synopsis, len(pos))
	}
	return nil
}

// warnLogger passes the engine's warnings (an ignored snapshot, a torn tail
// truncated at Open) to w, without timestamps.
func warnLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// checkDataDir fails clearly when dir is missing, not a directory, or holds
// no Marlin data (so that a mistyped path is not taken for an empty
// database by the commands that only read).
func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist (give --create to make a new database there, where the command has it)", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, ok := segment.ParseFileName(e.Name()); ok || e.Name() == engine.LockFileName {
			return nil
		}
	}
	return fmt.Errorf("%s is not a Marlin data directory (no segment files; give --create to make a new database there, where the command has it)", dir)
}

// openReadOnly opens dir for the commands that only read: a shared lock,
// nothing on disk modified. A directory a writer holds is refused with a
// message that says what to do.
func openReadOnly(dir string, stderr io.Writer) (*engine.DB, error) {
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	db, err := engine.Open(dir, &engine.Options{ReadOnly: true, Logger: warnLogger(stderr)})
	if errors.Is(err, engine.ErrLocked) {
		return nil, fmt.Errorf("%s is open for writing by another process; this command only reads "+
			"a consistent, closed directory: stop that process, or have it write a checkpoint "+
			"(DB.Checkpoint, or package admin's handler: POST /checkpoint?dir=DEST) and point this command at the checkpoint", dir)
	}
	if errors.Is(err, engine.ErrCorrupt) {
		return nil, fmt.Errorf("%w (run 'marlin verify %s' for every problem; 'marlin dump --skip-corrupt %s' "+
			"salvages the readable pairs; 'marlin verify --repair %s' shows what a repair would cut)", err, dir, dir, dir)
	}
	return db, err
}

// openSalvage opens dir read-only in salvage mode (dump --skip-corrupt):
// damage that makes a normal open fail is skipped and reported.
func openSalvage(dir string, stderr io.Writer) (*engine.DB, error) {
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	db, err := engine.Open(dir, &engine.Options{ReadOnly: true, Salvage: true, Logger: warnLogger(stderr)})
	if errors.Is(err, engine.ErrLocked) {
		return nil, fmt.Errorf("%s is open for writing by another process; stop it first", dir)
	}
	return db, err
}

// openWritable opens dir for the commands that write, creating it if
// create is set.
func openWritable(dir string, create bool, o engine.Options, stderr io.Writer) (*engine.DB, error) {
	if !create {
		if err := checkDataDir(dir); err != nil {
			return nil, err
		}
	}
	if o.Logger == nil {
		o.Logger = warnLogger(stderr)
	}
	db, err := engine.Open(dir, &o)
	if errors.Is(err, engine.ErrLocked) {
		return nil, fmt.Errorf("%s is in use by another process (a writer, or a reader such as "+
			"'marlin dump'); stop it and retry", dir)
	}
	if errors.Is(err, engine.ErrCorrupt) {
		// Nothing was cut: Open refuses damage to data that had been
		// fsynced. Only an explicit repair cuts it.
		return nil, fmt.Errorf("%w; nothing was changed (run 'marlin verify --repair %s' to see what a repair "+
			"would cut and save, and carry it out)", err, dir)
	}
	return db, err
}

// tidy drops the "marlin: " that engine errors start with: main already
// prefixes "marlin CMD: ". errors.Is still sees the wrapped error.
func tidy(err error) error {
	if err == nil || !strings.HasPrefix(err.Error(), "marlin: ") {
		return err
	}
	return tidyError{err}
}

// tidied applies tidy to a command's error.
func tidied(run func(args []string, stdout, stderr io.Writer) error) func([]string, io.Writer, io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error { return tidy(run(args, stdout, stderr)) }
}

type tidyError struct{ err error }

func (e tidyError) Error() string { return strings.TrimPrefix(e.err.Error(), "marlin: ") }
func (e tidyError) Unwrap() error { return e.err }

// closeDB closes db, keeping the first error.
func closeDB(db *engine.DB, err *error) {
	if cerr := db.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// limitFlags are the engine's per-open size limits, for the commands that
// write (a directory does not record them).
type limitFlags struct{ maxKey, maxValue int }

func (l *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&l.maxKey, "max-key-size", 250, "largest key accepted, in bytes (at most 65535)")
	fs.IntVar(&l.maxValue, "max-value-size", 1<<20, "largest value accepted, in bytes")
}

func (l *limitFlags) check(key, value []byte) error {
	switch {
	case len(key) == 0:
		return errors.New("empty key")
	case len(key) > l.maxKey:
		return fmt.Errorf("key of %d bytes is longer than --max-key-size %d", len(key), l.maxKey)
	case len(value) > l.maxValue:
		return fmt.Errorf("value of %d bytes is longer than --max-value-size %d", len(value), l.maxValue)
	}
	return nil
}

// Humanized figures.

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func comma(n int64) string { return humanize.Comma(n) }

func pct(part, whole int64) string {
	if whole <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
}

// rate formats n per d, e.g. "1,512,344/s".
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanize.Comma(int64(float64(n)/d.Seconds())) + "/s"
}

// segName is a segment's file name without the directory.
func segName(path string) string { return filepath.Base(path) }

// bufferedOut wraps w in a large buffer; call flush at the end.
func bufferedOut(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 1<<20) }

// ticker calls fn every interval until the returned stop function is
// called; stop waits for a running fn to finish.
func ticker(interval time.Duration, fn func()) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// plural returns "1 thing" or "n things".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return comma(n) + " " + many
}

// stdin is where load and put read "-"; tests replace it.
var stdin io.Reader = os.Stdin
