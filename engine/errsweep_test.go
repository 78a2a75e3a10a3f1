package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestErrorSweep runs the sweep workload (sweep_model_test.go) once per
// file operation i, failing operation i: a Write with ENOSPC after writing
// half of its buffer (a full disk) or with EIO, every other operation with
// EIO. The workload carries on after errors; a call that returns ErrFailed
// makes it close and reopen the DB, and each reopen checks the state it
// finds against the model. Then, for every i:
//
//   - the injected error reached a caller (a call returned an error wrapping
//     it), unless the operation is one whose failure only costs space or
//     speed (removing an old snapshot, a leftover temp file after another
//     error, reading a snapshot that is then ignored);
//   - a power loss after the workload (CrashClone keeping only synced data)
//     loses no write acknowledged as durable, and the state is a prefix of
//     the history in which the failed calls may or may not have happened;
//   - with the fault gone, the directory opens with that state, and Verify
//     finds nothing wrong after a writable open and close.
func TestErrorSweep(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	p := errParams{steps: 40, seeds: 1, stride: 1, verifyEvery: 8}
	if raceEnabled || testing.Short() {
		// Every 4th operation, a different residue per sync mode, so the
		// modes together still fail each kind of operation.
		p.stride, p.verifyEvery = 4, 16
	}
	if swEnvLong() {
		p = errParams{steps: 150, seeds: 3, stride: 1, verifyEvery: 1}
	}
	modes := []SyncMode{SyncGroup, SyncAlways, SyncPeriodic, SyncNone}
	var mu sync.Mutex
	totalInjected := 0
	swallowed := map[string]int{}
	for mi, sm := range modes {
		for seed := range uint64(p.seeds) {
			t.Run(fmt.Sprintf("%v/seed=%d", sm, seed), func(t *testing.T) {
				n, sw := errorSweep(t, swConfig{sync: sm, seed: 100 + seed, steps: p.steps}, p, int64(mi%p.stride))
				mu.Lock()
				totalInjected += n
				for k, v := range sw {
					swallowed[k] += v
				}
				mu.Unlock()
			})
		}
	}
	t.Logf("error sweep: %d errors injected; not reported to a caller (by design, see errorIgnorable): %v", totalInjected, swallowed)
}

type errParams struct {
	steps, seeds int
	stride       int // fail every stride-th operation
	verifyEvery  int // run Verify after every verifyEvery-th run
}

// errInjector fails operation number at, once.
type errInjector struct {
	n       atomic.Int64
	at      int64
	nospace bool // a failed Write is ENOSPC after half the buffer, else EIO

	mu   sync.Mutex
	op   vfs.Op
	name string
	hit  bool
	hist []opRec // the operations up to the failed one
}

type opRec struct {
	op   vfs.Op
	name string
}

func (o opRec) String() string { return fmt.Sprintf("%v %s", o.op, o.name) }

func (e *errInjector) MaybeError(op vfs.Op, name string) error {
	k := e.n.Add(1) - 1
	if k > e.at {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hist = append(e.hist, opRec{op, name})
	if k != e.at {
		return nil
	}
	e.op, e.name, e.hit = op, name, true
	if op == vfs.OpWrite && e.nospace {
		return vfs.ErrInjectedNoSpace
	}
	return vfs.ErrInjectedIO
}

func (e *errInjector) ShortWrite(_ error, n int) int {
	if e.nospace {
		return n / 2
	}
	return 0
}

// errorIgnorable reports whether the failure of the last operation of hist
// may go unreported: it costs space or time, never data or acknowledged
// writes. It returns a description of the case.
func errorIgnorable(hist []opRec, fs vfs.FS) (string, bool) {
	last := hist[len(hist)-1]
	kind := fileKind(last.name)
	// prev returns the latest operation before the last that is not a
	// Remove, List or SyncDir (the snapshot cleanup's own operations).
	prev := func() opRec {
		for i := len(hist) - 2; i >= 0; i-- {
			if o := hist[i].op; o != vfs.OpRemove && o != vfs.OpList && o != vfs.OpSyncDir {
				return hist[i]
			}
		}
		return opRec{}
	}
	switch {
	case kind == "snapshot" && (last.op == vfs.OpOpen || last.op == vfs.OpRead || last.op == vfs.OpStat || last.op == vfs.OpClose):
		return "loading a snapshot (Open replays the log instead)", true
	case kind == "snapshot" && last.op == vfs.OpRemove:
		return "removing a superseded snapshot", true
	case kind == "segment" && last.op == vfs.OpClose && len(hist) > 1 &&
		hist[len(hist)-2].op == vfs.OpClose && strings.HasPrefix(hist[len(hist)-2].name, "/ckpt"):
		// Closing the source of a checkpoint's copy, opened read-only.
		return "closing a segment copied into a checkpoint", true
	case kind == "segment" && last.op == vfs.OpClose:
		// Closing a segment compaction removes (the file is gone after
		// the workload); the error is logged.
		if _, err := fs.Stat(last.name); err != nil {
			return "closing a segment removed by compaction", true
		}
	case last.op == vfs.OpLink:
		return "linking a segment into a checkpoint (it is copied instead)", true
	case kind == "snapshot.tmp" && last.op == vfs.OpRemove:
		return "removing snapshot.tmp after another failure", true
	case (last.op == vfs.OpList || last.op == vfs.OpSyncDir) && last.name == "/db":
		// After a snapshot is renamed into place (and its directory synced),
		// removeOldSnapshots lists the directory, removes older snapshots
		// and syncs the directory, all best-effort.
		if p := prev(); p.op == vfs.OpRename && fileKind(p.name) == "snapshot.tmp" {
			return fmt.Sprintf("%v while removing superseded snapshots", last.op), true
		}
	}
	return "", false
}

// errorSweep fails each stride-th operation of one workload in turn,
// starting with operation first. It returns the number of runs and the
// unreported failures by kind.
func errorSweep(t *testing.T, cfg swConfig, p errParams, first int64) (int, map[string]int) {
	start := time.Now()
	swallowed := map[string]int{}
	var summary string
	restarts, failedRuns, runs := 0, 0, 0
	for i := first; ; i += int64(p.stride) {
		inj := &errInjector{at: i, nospace: i%2 == 0}
		mem := vfs.NewMem()
		r := newSwRunner(cfg, vfs.NewErrorFS(mem, inj))
		what := fmt.Sprintf("%v seed %d: op %d failed", cfg.sync, cfg.seed, i)
		err := r.run()
		if !inj.hit {
			// The workload ended before operation i: every one was swept.
			require.NoError(t, err, what)
			summary = r.summary()
			break
		}
		runs++
		what = fmt.Sprintf("%s (%v %s, %v)", what, inj.op, inj.name, map[bool]string{true: "ENOSPC", false: "EIO"}[inj.nospace && inj.op == vfs.OpWrite])
		require.NoError(t, err, "%s: the workload", what)
		restarts += r.restarts
		if r.restarts > 0 {
			failedRuns++
		}

		surfaced := false
		for _, e := range r.errs {
			if errors.Is(e, vfs.ErrInjected) {
				surfaced = true
			}
		}
		if !surfaced {
			kind, ok := errorIgnorable(inj.hist, mem)
			require.True(t, ok, "%s: the error reached no caller; operations before it: %v", what, inj.hist[max(0, len(inj.hist)-8):])
			swallowed[kind]++
		}

		// A power loss now keeps every durable write.
		s := r.m.snap()
		clone := mem.CrashClone(nil)
		full := runs%p.verifyEvery == 0
		checkErrImage(t, cfg, clone, s, full, what+", then a power loss")
		// With the fault gone, the directory opens, holds the same state as
		// a prefix of the history, and verifies.
		checkErrImage(t, cfg, mem, s, full, what+", reopened")
	}
	t.Logf("%v seed %d: %d errors injected (every %d operation from %d) in %v; %d of them failed the handle (%d reopens); workload without errors: %s; unreported: %v",
		cfg.sync, cfg.seed, runs, p.stride, first, time.Since(start), failedRuns, restarts, summary, swallowed)
	return runs, swallowed
}

func fileKind(name string) string {
	base := filepath.Base(name)
	_, isSnap := parseSnapName(base)
	_, isSeg := segment.ParseFileName(base)
	switch {
	case isSnap:
		return "snapshot"
	case isSeg:
		return "segment"
	case base == snapTmpName:
		return "snapshot.tmp"
	case strings.HasSuffix(name, LockFileName):
		return "LOCK"
	}
	return name
}

func checkErrImage(t *testing.T, cfg swConfig, fs *vfs.MemFS, s *swSnap, full bool, what string) {
	t.Helper()
	o := swOpts(fs, cfg.sync)
	db, err := Open("/db", o)
	require.NoError(t, err, "%s: open", what)
	obs, err := swObserve(db, s.keys, s.writes, full)
	require.NoError(t, err, "%s", what)
	_, err = s.check(obs)
	require.NoError(t, err, "%s", what)
	require.NoError(t, db.Close(), "%s: close", what)
	if !full {
		return
	}
	rep, err := Verify("/db", o)
	require.NoError(t, err, "%s: verify", what)
	require.True(t, rep.OK(), "%s: verify: %v", what, rep.Problems)
}
