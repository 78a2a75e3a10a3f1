package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/segment"
)

const verifyHelp = `Checks DIR thoroughly: every record of every segment decodes and matches
its CRC, the index that Open builds from the snapshot holds exactly what a
full replay of the log gives (no stale entry, no live key missing), and
every index entry points at a record of a key with that hash. Each problem
is printed as "FILE at offset N: what"; the exit status is 1 if there is
any. DIR is opened read-only and not modified.

With --repair, verify plans a repair and shows it before changing
anything: for each damaged segment, the exact offset where it will be cut
(where the valid log ends: the first bad record, or the start of a batch
whose commit record is lost), and every record it drops from there on
(count, and the keys: the first 20, all with --verbose). Records that still
decode after the damage are dropped too (offsets cannot move); to keep
them, first salvage with 'marlin dump --skip-corrupt DIR'. The dropped bytes
are saved to a side file before anything is cut (--save, default
DIR.repair-TIMESTAMP.dropped next to DIR, never inside it). Then verify asks
for confirmation on a terminal; without a terminal it refuses unless --yes
is given. The segment is cut exactly at the planned offset, the index
snapshots are deleted and the index rebuilt from the log, and DIR is
checked again. A plan that drops nothing (only the index needs a rebuild)
is carried out without asking.`

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "[flags] DIR\n\n"+verifyHelp, "marlin verify /var/lib/app/db || marlin verify --repair /var/lib/app/db", stderr)
	repair := fs.Bool("repair", false, "plan a repair, show it, and carry it out after confirmation (see above)")
	yes := fs.Bool("yes", false, "with --repair: carry out the plan without asking")
	save := fs.String("save", "", "with --repair: side file for the dropped bytes (default DIR.repair-TIMESTAMP.dropped next to DIR)")
	verbose := fs.Bool("verbose", false, "with --repair: list every dropped key, not only the first 20")
	quiet := fs.Bool("quiet", false, "no progress line (there is none when stderr is not a terminal)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	dir := pos[0]
	rep, err := verifyDir(dir, *quiet, stderr)
	if err != nil {
		return err
	}
	writeVerify(stdout, dir, rep)
	if rep.OK() {
		return nil
	}
	if !*repair {
		return fmt.Errorf("%s found in %s (run 'marlin verify --repair %s' to see what can be repaired)",
			plural(int64(len(rep.Problems)), "problem", "problems"), dir, dir)
	}
	plan, err := engine.PlanRepair(dir, nil)
	if err != nil {
		return err
	}
	if *save != "" {
		plan.SaveTo = *save
	}
	if len(plan.Unrepairable) > 0 {
		fmt.Fprintln(stdout, "\ncannot repair automatically: damage a cut cannot fix:")
		for _, p := range plan.Unrepairable {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
		return fmt.Errorf("nothing changed: %s cannot be repaired by verify --repair; restore the damaged data from a checkpoint or a backup", dir)
	}
	writePlan(stdout, plan, *verbose)
	if plan.DroppedBytes() > 0 && !*yes {
		if !stdinIsTerminal() {
			return fmt.Errorf("nothing changed: the repair drops data and stdin is not a terminal to confirm it; "+
				"rerun with --yes to carry out this plan (marlin verify --repair --yes %s)", dir)
		}
		records, _ := plan.DroppedRecords()
		fmt.Fprintf(stdout, "cut %s (%s) as planned above? [y/N] ", ibytes(plan.DroppedBytes()), plural(int64(records), "record", "records"))
		if !confirmed(stdin) {
			return fmt.Errorf("nothing changed: repair not confirmed")
		}
	}
	fmt.Fprintln(stdout, "repairing...")
	if err := engine.ApplyRepair(plan, &engine.Options{Logger: warnLogger(stderr)}); err != nil {
		if errors.Is(err, engine.ErrLocked) {
			return fmt.Errorf("%s is in use by another process; stop it and retry the repair", dir)
		}
		return fmt.Errorf("repair failed: %w", err)
	}
	if plan.DroppedBytes() > 0 {
		fmt.Fprintf(stdout, "saved the %s dropped to %s\n", ibytes(plan.DroppedBytes()), plan.SaveTo)
	}
	for _, c := range plan.Cuts {
		fmt.Fprintf(stdout, "cut %s at offset %d\n", c.File, c.Offset)
	}
	rep, err = verifyDir(dir, *quiet, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nafter repair:")
	writeVerify(stdout, dir, rep)
	if !rep.OK() {
		return fmt.Errorf("%s still has %s after the repair", dir, plural(int64(len(rep.Problems)), "problem", "problems"))
	}
	return nil
}

// shownKeys is how many dropped keys a plan lists without --verbose.
const shownKeys = 20

// writePlan prints what ApplyRepair will do.
func writePlan(w io.Writer, plan *engine.RepairPlan, verbose bool) {
	fmt.Fprintln(w, "\nrepair plan:")
	for _, c := range plan.Cuts {
		keyed := 0
		for _, r := range c.Dropped {
			if r.Key != nil {
				keyed++
			}
		}
		fmt.Fprintf(w, "  cut %s at offset %d (the file has %d bytes): drops %s from offset %d on: %s, %s\n",
			c.File, c.Offset, c.Size, plural(c.DroppedBytes(), "byte", "bytes"), c.Offset,
			plural(int64(len(c.Dropped)), "readable record", "readable records"),
			plural(int64(keyed), "of a key", "of keys"))
		fmt.Fprintf(w, "    damage at offset %d: %s\n", c.Damage, c.Reason)
		shown := 0
		for _, r := range c.Dropped {
			if r.Key == nil {
				continue
			}
			if shown == shownKeys && !verbose {
				fmt.Fprintf(w, "    ... and %s more (--verbose lists them all; all are in the side file)\n",
					plural(int64(keyed-shown), "key", "keys"))
				break
			}
			shown++
			what := "put"
			if r.Kind != segment.KindPut {
				what = "delete"
			}
			if r.Batch {
				what += ", in a batch without its commit"
			}
			fmt.Fprintf(w, "    drops offset %d seq %d %s %s\n", r.Offset, r.Seq, what, appendEscaped(nil, r.Key))
		}
	}
	if plan.DroppedBytes() > 0 {
		fmt.Fprintf(w, "  save the %s dropped to %s first\n", plural(plan.DroppedBytes(), "byte", "bytes"), plan.SaveTo)
	}
	fmt.Fprintln(w, "  delete the index snapshots and rebuild the index from the log (a full replay), then write a fresh snapshot")
	if len(plan.Cuts) > 0 {
		fmt.Fprintln(w, "  (a key whose newest record is dropped then reads as its newest remaining version, if any)")
	}
}

// stdinIsTerminal reports whether stdin is a terminal (a person can
// confirm); tests replace it.
var stdinIsTerminal = func() bool {
	f, ok := stdin.(*os.File)
	return ok && isTerminalFile(f)
}

// confirmed reads one line from r and reports whether it says yes.
func confirmed(r io.Reader) bool {
	line, _ := bufio.NewReader(r).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func verifyDir(dir string, quiet bool, stderr io.Writer) (*engine.VerifyReport, error) {
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	// The progress line reads what the verifying goroutine last said.
	var mu sync.Mutex
	var phase string
	var done, total int64
	stop := progressLine(stderr, quiet, func(el time.Duration) string {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case phase == "":
			return "verify: starting, " + el.Round(time.Second).String()
		case total > 0:
			return fmt.Sprintf("verify: %s, %d of %d, %s", phase, done, total, el.Round(time.Second))
		}
		return fmt.Sprintf("verify: %s, %s", phase, el.Round(time.Second))
	})
	rep, err := engine.VerifyWithProgress(dir, nil, func(p string, d, t int64) {
		mu.Lock()
		phase, done, total = p, d, t
		mu.Unlock()
	})
	stop()
	if errors.Is(err, engine.ErrLocked) {
		return nil, fmt.Errorf("%s is open for writing by another process; verify needs it closed "+
			"(or verify a checkpoint of it: DB.Checkpoint)", dir)
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func writeVerify(w io.Writer, dir string, rep *engine.VerifyReport) {
	for _, p := range rep.Problems {
		fmt.Fprintln(w, p.String())
	}
	idx := "the index (full replay) checked"
	switch {
	case hasLogDamage(rep):
		idx = "the index was not checked: Open refuses the damaged log"
	case rep.SnapshotUsed:
		idx = "the index (snapshot and full replay) checked"
	}
	keys := plural(rep.Keys, "live key", "live keys") + "; "
	if hasLogDamage(rep) {
		keys = "" // not counted: no replay
	}
	fmt.Fprintf(w, "%s: %s, %s, %s%s\n", dir, plural(int64(rep.Segments), "segment", "segments"),
		plural(rep.Records, "record", "records"), keys, idx)
	if rep.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintf(w, "FAILED: %s\n", plural(int64(len(rep.Problems)), "problem", "problems"))
	}
}

// isIndexProblem tells the problems that Verify found in the index (which
// a rebuild fixes) from damage found scanning the log. The engine does not
// classify them, so this goes by its wording: every index problem mentions
// the index, no log problem does.
func isIndexProblem(p engine.VerifyProblem) bool { return p.Index }

func hasLogDamage(rep *engine.VerifyReport) bool {
	for _, p := range rep.Problems {
		if !p.TornTail && !isIndexProblem(p) {
			return true
		}
	}
	return false
}
