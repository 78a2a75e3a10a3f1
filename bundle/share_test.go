package bundle

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Sharing: several processes open one bundle; each reads every pair
// correctly, and the kernel counts the file's pages once for all of them
// (each process's proportional share, Pss, of the mapping is its resident
// size divided by the number of processes mapping it).

const (
	shareProcs = 4
	sharePairs = 100000
)

// sharePair is pair i: what every process can recompute.
func sharePair(i int) (k, v []byte) {
	return fmt.Appendf(nil, "shared key %d", i), fmt.Appendf(nil, "value %d %s", i, strings.Repeat("s", i%97))
}

func TestShareAcrossProcesses(t *testing.T) {
	if path := os.Getenv("BUNDLE_SHARE_CHILD"); path != "" {
		shareChild(path)
		return
	}
	if testing.Short() {
		t.Skip("runs child processes")
	}
	path := filepath.Join(t.TempDir(), "shared.bundle")
	b, err := NewBuilder(nil, path, nil)
	require.NoError(t, err)
	for i := range sharePairs {
		require.NoError(t, b.Add(sharePair(i)))
	}
	require.NoError(t, b.Finish())
	size := b.Stats().FileSize

	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	var kids []child
	for range shareProcs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestShareAcrossProcesses$")
		cmd.Env = append(os.Environ(), "BUNDLE_SHARE_CHILD="+path)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		kids = append(kids, child{cmd, stdin, bufio.NewScanner(stdout)})
	}
	defer func() {
		for _, k := range kids {
			k.stdin.Close()
			_ = k.cmd.Wait()
		}
	}()
	line := func(k child) string {
		require.True(t, k.out.Scan(), "a child ended early")
		return k.out.Text()
	}
	// Every child has read every pair before any measures.
	for _, k := range kids {
		require.Equal(t, fmt.Sprintf("read %d pairs correctly", sharePairs), line(k))
	}
	for _, k := range kids {
		_, err := io.WriteString(k.stdin, "measure\n")
		require.NoError(t, err)
	}
	for i, k := range kids {
		var rss, pss int64
		_, err := fmt.Sscanf(line(k), "rss %d pss %d", &rss, &pss)
		require.NoError(t, err)
		t.Logf("process %d: the %d-byte bundle is %d KiB resident, proportional share %d KiB", i, size, rss>>10, pss>>10)
		if rss < 0 {
			continue // no /proc/self/smaps
		}
		require.GreaterOrEqual(t, rss, size*9/10)
		// One copy for all: each process's share is about a quarter.
		require.Less(t, pss, rss*2/shareProcs)
	}
	for _, k := range kids {
		require.NoError(t, k.stdin.Close())
		require.NoError(t, k.cmd.Wait())
	}
	kids = nil
}

// shareChild is one reading process: it checks every pair from two
// goroutines, verifies the file (touching every page), reports, waits for
// "measure", reports its mapping's Rss and Pss, and waits for its stdin
// to close.
func shareChild(path string) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "share child: "+format+"\n", args...)
		os.Exit(2)
	}
	r, err := Open(nil, path, &OpenOptions{VerifyEntries: true})
	if err != nil {
		fail("%v", err)
	}
	var wg sync.WaitGroup
	var bad sync.Once
	for g := range 2 {
		wg.Go(func() {
			for i := g; i < sharePairs; i += 2 {
				k, want := sharePair(i)
				v, err := r.Get(k)
				if err != nil || string(v) != string(want) {
					bad.Do(func() { fail("Get(%q) = %q, %v", k, v, err) })
				}
			}
		})
	}
	wg.Wait()
	if _, err := r.Get([]byte("absent")); err != ErrNotFound {
		fail("an absent key: %v", err)
	}
	if err := r.Verify(); err != nil {
		fail("%v", err)
	}
	fmt.Printf("read %d pairs correctly\n", sharePairs)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "measure" {
		fail("no measure")
	}
	rss, pss := mappingMemory(path)
	fmt.Printf("rss %d pss %d\n", rss, pss)
	for in.Scan() {
	}
	r.Close()
	os.Exit(0)
}

// mappingMemory returns the Rss and Pss of this process's mapping of
// path, from /proc/self/smaps (-1, -1 if it cannot tell).
func mappingMemory(path string) (rss, pss int64) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return -1, -1
	}
	rss, pss = -1, -1
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4:
			in = len(f) >= 6 && f[5] == path // a mapping's first line
		case in && len(f) == 3 && (f[0] == "Rss:" || f[0] == "Pss:"):
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "Rss:" {
				rss = kb << 10
			} else {
				pss = kb << 10
			}
		}
	}
	return rss, pss
}
