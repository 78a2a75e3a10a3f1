package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// runFold is 'marlin bundle build DIR --switch': DB.Fold on DIR, opened
// for writing.
func runFold(pos []string, out, valueFmt, memory, tempDir string, quiet bool, stdout, stderr io.Writer) (err error) {
	if len(pos) != 1 {
		return errors.New("a fold (--switch) takes one SRC, a data directory")
	}
	dir := pos[0]
	o := &engine.FoldOptions{Path: out, TempDir: tempDir}
	switch valueFmt {
	case "":
	case "plain":
		o.ValueFormat = bundle.ValuesPlain
	case "items":
		o.ValueFormat = bundle.ValuesItems
	default:
		return fmt.Errorf("--value-format: want plain or items, not %q", valueFmt)
	}
	mem, err := humanize.ParseBytes(memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	o.MemoryLimit = int64(min(mem, math.MaxInt64))
	db, err := openWritable(dir, false, engine.Options{}, stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	if o.ValueFormat == bundle.ValuesPlain && valueFmt == "plain" && db.Base().ValueFormat != bundle.ValuesPlain {
		return fmt.Errorf("--value-format plain: the base %s holds items; a fold keeps them", db.Base().Path)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Cancel = ctx.Done()
	var b *bundle.Builder
	started := make(chan struct{})
	o.Started = func(bb *bundle.Builder) { b = bb; close(started) }
	start := time.Now()
	stopProgress := progressLine(stderr, quiet, func(el time.Duration) string {
		select {
		case <-started:
			return "fold: " + bundleProgress(b.Progress(), nil, el)
		default:
			return "fold: starting, " + el.Round(time.Second).String()
		}
	})
	defer stopProgress()
	old := db.Base()
	st, err := db.Fold(o)
	stopProgress()
	if errors.Is(err, bundle.ErrCanceled) {
		return fmt.Errorf("interrupted: %s keeps its base and its delta", dir)
	}
	if err != nil {
		return err
	}
	from := "its delta"
	if old.Path != "" {
		from = "base " + old.Path + " and its delta"
	}
	fmt.Fprintf(stdout, "folded %s into %s: %s in %s (%s); %s is the base of %s now; %s dropped from the delta\n",
		from, st.Path, plural(st.Pairs, "pair", "pairs"), time.Since(start).Round(time.Millisecond),
		ibytes(st.Build.FileSize), st.Path, dir, plural(st.Dropped, "entry", "entries"))
	return nil
}

// runBundleBase is 'marlin bundle base DIR [FILE]': it describes DIR's
// base, or switches DIR to the bundle FILE (DB.SetBase).
func runBundleBase(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("bundle base", "[flags] DIR [FILE]\n\n"+
		"Without FILE, describes the base bundle under the data directory DIR. With\n"+
		"FILE, makes the bundle FILE the base of DIR (its BASE file replaced by\n"+
		"rename) and drops from the delta what FILE holds; the delta's writes stay\n"+
		"on top. FILE should be a fold of DIR ('marlin bundle build DIR') or an\n"+
		"export at least as new as the delta's oldest write: a key the delta\n"+
		"deleted while the old base lacked it shows again if FILE has it.",
		"marlin bundle base /var/lib/app/db /srv/bundles/products-2026-12-03.bundle", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 2, "DIR [FILE]"); err != nil {
		return err
	}
	if len(pos) == 1 {
		db, err := openReadOnly(pos[0], stderr)
		if err != nil {
			return err
		}
		defer closeDB(db, &err)
		b := db.Base()
		if b.Path == "" {
			fmt.Fprintf(stdout, "%s has no base bundle\n", pos[0])
			return nil
		}
		format := "plain"
		if b.ValueFormat == bundle.ValuesItems {
			format = "items"
		}
		fmt.Fprintf(stdout, "base %s: %s, %s, values %s, built %s, sequence number %d\n",
			b.Path, plural(b.Pairs, "pair", "pairs"), ibytes(b.Bytes), format, b.Built.UTC().Format(time.RFC3339), b.Seq)
		return nil
	}
	db, err := openWritable(pos[0], false, engine.Options{}, stderr)
	if err != nil {
		return err
	}
	defer closeDB(db, &err)
	st, err := db.SetBase(pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is the base of %s now (%s); %s dropped from the delta\n",
		pos[1], pos[0], plural(st.Pairs, "pair", "pairs"), plural(st.Dropped, "entry", "entries"))
	return nil
}
