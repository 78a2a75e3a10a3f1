package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/vfs"
)

// genPair is pair i of a deterministic input that is not held in memory:
// key "k<i>" (a few keys repeat, so duplicates cross runs), a value of 20
// to 220 bytes.
func genPair(i int) (k, v []byte) {
	k = fmt.Appendf(nil, "k%d", i%(1<<30-7)*7%1000003)
	v = bytes.Repeat(fmt.Appendf(nil, "%d,", i), 1+(i*31)%40)
	return k, v
}

// addGen adds pairs 0..n-1 of genPair and returns their model.
func addGen(t testing.TB, b *Builder, n int) map[string]string {
	t.Helper()
	m := map[string]string{}
	for i := range n {
		k, v := genPair(i)
		require.NoError(t, b.Add(k, v))
		m[string(k)] = string(v)
	}
	return m
}

// TestExternalSort builds with the smallest memory limit from input 77
// times larger (19 in -short): many runs, merge passes, and the same file (but
// for the build time) as an in-memory build. It runs on the OS
// filesystem and checks the process's peak resident memory: the input is
// generated on the fly, so the build is all that could raise it.
func TestExternalSort(t *testing.T) {
	n := 150000
	if testing.Short() {
		n = 40000
	}
	dir := t.TempDir()
	resetPeakRSS := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	before := peakRSS(t)
	b, err := NewBuilder(nil, filepath.Join(dir, "small"), &BuildOptions{MemoryLimit: MinMemoryLimit, Seed: 5})
	require.NoError(t, err)
	for i := range n {
		k, v := genPair(i)
		require.NoError(t, b.Add(k, v))
	}
	require.NoError(t, b.Finish())
	grew := peakRSS(t) - before
	m := addGen(t, nopBuilder(t), n)
	st := b.Stats()
	in := int64(0)
	for i := range n {
		k, v := genPair(i)
		in += int64(len(k) + len(v))
	}
	t.Logf("%d pairs, %d bytes of input, memory limit %d: %d runs, %d merge passes, %d bytes read back, peak RSS +%d bytes",
		n, in, MinMemoryLimit, st.Runs, st.MergePasses, st.ScratchRead, grew)
	require.Greater(t, in, int64(16*MinMemoryLimit))
	require.Greater(t, st.Runs, 20)
	require.GreaterOrEqual(t, st.MergePasses, 1)
	require.Equal(t, int64(n)-int64(len(m)), st.Duplicates)
	if resetPeakRSS && !raceEnabled {
		require.Less(t, grew, int64(MinMemoryLimit+24<<20), "peak RSS grew by %d bytes", grew)
	}
	require.Equal(t, []string{"small"}, listAll(t, vfs.Default, dir), "temporary files left")

	big, err := NewBuilder(nil, filepath.Join(dir, "big"), &BuildOptions{Seed: 5})
	require.NoError(t, err)
	addGen(t, big, n)
	require.NoError(t, big.Finish())
	require.Zero(t, big.Stats().Runs)
	a, c := readFile(t, vfs.Default, filepath.Join(dir, "small")), readFile(t, vfs.Default, filepath.Join(dir, "big"))
	require.Equal(t, len(a), len(c))
	foot := len(a) - footerSize
	copy(c[foot+80:foot+88], a[foot+80:foot+88]) // build time
	copy(c[foot+124:], a[foot+124:])
	require.True(t, bytes.Equal(a, c), "the external sort wrote another file than the in-memory sort")

	r := open(t, vfs.Default, filepath.Join(dir, "small"))
	checkModel(t, r, m)
}

// nopBuilder is a builder whose pairs are never written (for addGen's
// model).
func nopBuilder(t testing.TB) *Builder {
	b, err := NewBuilder(vfs.NewMem(), "/nop", nil)
	require.NoError(t, err)
	t.Cleanup(func() { b.Abort() })
	return b
}

// peakRSS is the process's peak resident set (VmHWM), in bytes.
func peakRSS(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	return 0
}

// TestTempDir: runs go to TempDir, the output beside its final name.
func TestTempDir(t *testing.T) {
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll("/out", 0o755))
	require.NoError(t, fs.MkdirAll("/scratch", 0o755))
	var sawRun atomic.Bool
	efs := vfs.NewErrorFS(fs, vfs.InjectorFunc(func(op vfs.Op, name string) error {
		if op == vfs.OpCreate && strings.HasPrefix(name, "/scratch/") && strings.Contains(name, "run-") {
			sawRun.Store(true)
		}
		if op == vfs.OpCreate && strings.HasPrefix(name, "/out/") && strings.Contains(name, "run-") {
			return errors.New("a run beside the output")
		}
		return nil
	}))
	b, err := NewBuilder(efs, "/out/b", &BuildOptions{MemoryLimit: MinMemoryLimit, TempDir: "/scratch"})
	require.NoError(t, err)
	m := addGen(t, b, 20000)
	require.NoError(t, b.Finish())
	require.True(t, sawRun.Load())
	require.Empty(t, listAll(t, fs, "/scratch"))
	require.Equal(t, []string{"b"}, listAll(t, fs, "/out"))
	checkModel(t, open(t, fs, "/out/b"), m)
}

// TestCancel: closing Cancel stops Add, or Finish in the middle of the
// merge; no file appears under the name (an old one stays) and the
// temporary files are gone.
func TestCancel(t *testing.T) {
	for _, during := range []string{"add", "finish"} {
		t.Run(during, func(t *testing.T) {
			fs := vfs.NewMem()
			writeFile(t, fs, "/b", []byte("the old file"))
			cancel := make(chan struct{})
			var creates atomic.Int32
			efs := vfs.NewErrorFS(fs, vfs.InjectorFunc(func(op vfs.Op, name string) error {
				// Cancel once Finish creates the output.
				if op == vfs.OpCreate && strings.HasSuffix(name, ".tmp") && creates.Add(1) == 1 && during == "finish" {
					close(cancel)
				}
				return nil
			}))
			b, err := NewBuilder(efs, "/b", &BuildOptions{MemoryLimit: MinMemoryLimit, Cancel: cancel})
			require.NoError(t, err)
			var addErr error
			for i := range 30000 {
				if during == "add" && i == 20000 {
					close(cancel)
				}
				k, v := genPair(i)
				if addErr = b.Add(k, v); addErr != nil {
					break
				}
			}
			if during == "add" {
				require.ErrorIs(t, addErr, ErrCanceled)
				require.ErrorIs(t, b.Finish(), ErrCanceled)
			} else {
				require.NoError(t, addErr)
				require.ErrorIs(t, b.Finish(), ErrCanceled)
			}
			require.NoError(t, b.Abort())
			require.Equal(t, "the old file", string(readFile(t, fs, "/b")))
			require.Equal(t, []string{"b"}, listAll(t, fs, "/"))
		})
	}
}

// TestBuildErrorSweep fails the i-th filesystem operation of a build with
// runs, for every i: the error reaches Add or Finish, and the final name
// holds the old file or, only if the failure came after the rename (the
// directory sync), the complete new bundle. Temporary files are removed
// (all of them unless the failed operation was a removal).
func TestBuildErrorSweep(t *testing.T) {
	var m map[string]string
	n := 6000
	for i := 1; ; i++ {
		fs := vfs.NewMem()
		writeFile(t, fs, "/b", []byte("old"))
		var count atomic.Int64
		var failed atomic.Value
		efs := vfs.NewErrorFS(fs, vfs.InjectorFunc(func(op vfs.Op, name string) error {
			if count.Add(1) == int64(i) {
				failed.Store(op)
				return vfs.ErrInjectedIO
			}
			return nil
		}))
		b, err := NewBuilder(efs, "/b", &BuildOptions{MemoryLimit: MinMemoryLimit, Seed: 1})
		if err != nil {
			require.ErrorIs(t, err, vfs.ErrInjected)
			continue
		}
		var berr error
		m = map[string]string{}
		for j := range n {
			k, v := genPair(j)
			if berr = b.Add(k, v); berr != nil {
				break
			}
			m[string(k)] = string(v)
		}
		if berr == nil {
			berr = b.Finish()
		}
		if failed.Load() == nil {
			require.NoError(t, berr)
			t.Logf("every one of %d operations failed in turn", i-1)
			checkModel(t, open(t, fs, "/b"), m)
			return
		}
		op := failed.Load().(vfs.Op)
		if berr == nil {
			// Closing a file that was only read, or removing a merged run
			// (the cleanup at the end removes it again): nothing depends
			// on them.
			require.Contains(t, []vfs.Op{vfs.OpClose, vfs.OpRemove}, op, "operation %d failed unnoticed", i)
			checkModel(t, open(t, fs, "/b"), m)
			if op == vfs.OpClose {
				require.Equal(t, []string{"b"}, listAll(t, fs, "/"))
			}
			continue
		}
		require.ErrorIs(t, berr, vfs.ErrInjected, "operation %d (%v)", i, op)
		require.NoError(t, b.Abort())
		if got := readFile(t, fs, "/b"); string(got) != "old" {
			require.Equal(t, vfs.OpSyncDir, op, "operation %d (%v): the final name changed", i, op)
			checkModel(t, open(t, fs, "/b"), m)
		}
		if op != vfs.OpRemove {
			require.Equal(t, []string{"b"}, listAll(t, fs, "/"), "operation %d (%v): temporary files left", i, op)
		}
	}
}

// TestBuildKilled kills a process at moments spread over builds (on the
// OS filesystem) that replace one bundle again and again: the final name
// always holds the old file or a complete bundle; the temporary files a
// kill leaves have hidden names.
func TestBuildKilled(t *testing.T) {
	if os.Getenv("BUNDLE_CHILD_BUILD") != "" {
		childBuild(os.Getenv("BUNDLE_CHILD_BUILD"))
		return
	}
	if testing.Short() {
		t.Skip("runs child processes")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "b")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	replaced := 0
	for i := range 12 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBuildKilled$")
		cmd.Env = append(os.Environ(), "BUNDLE_CHILD_BUILD="+path)
		require.NoError(t, cmd.Start())
		time.Sleep(time.Duration(20+i*130) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		require.Error(t, cmd.Wait(), "the child stopped by itself")
		if got, err := os.ReadFile(path); err == nil && string(got) == "old" {
			continue
		}
		r, err := Open(nil, path, nil)
		require.NoError(t, err, "kill %d: the final name holds a bad bundle", i)
		require.NoError(t, r.Verify())
		require.Equal(t, childPairs, r.Len())
		require.NoError(t, r.Close())
		replaced++
		for _, name := range listAll(t, vfs.Default, dir) {
			require.True(t, name == "b" || strings.HasPrefix(name, ".b."), "left %s", name)
		}
	}
	t.Logf("12 kills; the bundle had been replaced by then %d times", replaced)
	require.Positive(t, replaced)
}

const childPairs = 100000

// childBuild builds bundles of childPairs pairs (with runs: 1 MiB of
// memory) under path, one after another, until it is killed.
func childBuild(path string) {
	for {
		b, err := NewBuilder(nil, path, &BuildOptions{MemoryLimit: 1 << 20})
		if err != nil {
			os.Exit(3)
		}
		for i := range childPairs {
			k, v := genPair(i)
			if b.Add(fmt.Appendf(k, "/%d", i), v) != nil {
				os.Exit(4)
			}
		}
		if b.Finish() != nil {
			os.Exit(5)
		}
	}
}
