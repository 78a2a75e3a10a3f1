package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/marlinkv/marlin/engine"
)

const verifyHelp = `Checks DIR thoroughly: every record of every segment decodes and matches
its CRC, the index that Open builds from the snapshot holds exactly what a
full replay of the log gives (no stale entry, no live key missing), and
every index entry points at a record of a key with that hash. Each problem
is printed as "FILE at offset N: what"; the exit status is 1 if there is
any. DIR is opened read-only and not modified.

With --repair, verify first says what it will do, then does it and checks
again: a torn tail (never-fsynced bytes at the end of the newest segment,
left by a crash) is truncated, and the index snapshots are deleted and the
index rebuilt from the log. Damage inside fsynced data cannot be repaired
this way; verify --repair then changes nothing and says so (restore that
data from a checkpoint or a backup).`

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "[flags] DIR\n\n"+verifyHelp, "marlin verify /var/lib/app/db || marlin verify --repair /var/lib/app/db", stderr)
	repair := fs.Bool("repair", false, "repair a torn tail and the index (see above)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "DIR"); err != nil {
		return err
	}
	dir := pos[0]
	rep, err := verifyDir(dir, stderr)
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
	plan, bad := repairPlan(rep)
	if len(bad) > 0 {
		fmt.Fprintln(stdout, "\ncannot repair automatically: damage in data that had been fsynced:")
		for _, p := range bad {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
		return fmt.Errorf("nothing changed: %s cannot be repaired by verify --repair; restore the damaged data from a checkpoint or a backup", dir)
	}
	fmt.Fprintln(stdout, "\nrepair plan:")
	for _, s := range plan {
		fmt.Fprintf(stdout, "  will %s\n", s)
	}
	fmt.Fprintln(stdout, "repairing...")
	if err := engine.Repair(dir, &engine.Options{Logger: warnLogger(stderr)}); err != nil {
		if errors.Is(err, engine.ErrLocked) {
			return fmt.Errorf("%s is in use by another process; stop it and retry the repair", dir)
		}
		return fmt.Errorf("repair failed: %w", err)
	}
	rep, err = verifyDir(dir, stderr)
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

func verifyDir(dir string, stderr io.Writer) (*engine.VerifyReport, error) {
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	rep, err := engine.Verify(dir, nil)
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

// repairPlan says what Repair will do about the problems, and which ones
// it cannot repair.
func repairPlan(rep *engine.VerifyReport) (plan []string, bad []engine.VerifyProblem) {
	index := false
	for _, p := range rep.Problems {
		switch {
		case p.TornTail:
			plan = append(plan, fmt.Sprintf("truncate the torn tail of %s at offset %d (never-fsynced bytes after the last complete record)", p.File, p.Offset))
		case isIndexProblem(p):
			index = true
		default:
			bad = append(bad, p)
		}
	}
	if index || len(plan) > 0 {
		plan = append(plan, "delete the index snapshots and rebuild the index from the log (a full replay), then write a fresh snapshot")
	}
	return plan, bad
}
