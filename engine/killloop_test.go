package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// The kill loop: a child process (this test binary, re-run as
// TestKillChild) writes to a database on real files with SyncGroup or
// SyncAlways from several goroutines, with small segments, background
// compaction and frequent snapshots, and prints each write it was
// acknowledged. The parent kills it with SIGKILL at a random moment (now
// and then while it is still opening the database, so recovery itself gets
// killed), reopens the directory and checks that every acknowledged write
// is there with its value or a later one, that no value is garbage, and
// that the directory verifies once closed. The directory carries over from
// one kill to the next.
//
// MARLIN_KILLS sets the number of kills (default 20; make crash N=...).

const killEnv = "MARLIN_KILL_CHILD" // set in the child: "dir mode seed"

func killOpts(sm SyncMode) *Options {
	return &Options{SegmentSize: 256 << 10, WriteBufferSize: 64 << 10, Sync: sm,
		CompactionThreshold: 0.3, SnapshotInterval: 50 * time.Millisecond, SnapshotRecords: 2000, SnapshotLogRatio: -1,
		ExpiryInterval: -1, IndexReserve: 1 << 28, Logger: discardLogger}
}

// TestKillChild is the child side; it does nothing unless killEnv is set.
func TestKillChild(t *testing.T) {
	spec := os.Getenv(killEnv)
	if spec == "" {
		t.Skip("the kill loop's child process (see TestKillLoop)")
	}
	var dir string
	var mode SyncMode
	var seed uint64
	if _, err := fmt.Sscan(spec, &dir, &mode, &seed); err != nil {
		fmt.Fprintln(os.Stderr, "bad", killEnv, spec, err)
		os.Exit(2)
	}
	db, err := Open(dir, killOpts(mode))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	ack := func(line string) {
		out.Lock()
		os.Stdout.WriteString(line + "\n") // one write(2) per line
		out.Unlock()
	}
	ack("ready")
	stop := time.Now().Add(30 * time.Second) // the parent kills long before
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; time.Now().Before(stop); i++ {
				// Keys per writer and run; later writes overwrite earlier
				// keys with higher versions.
				ver := int(seed)<<20 | i
				switch p := rnd.IntN(10); {
				case p < 7:
					k := fmt.Sprintf("s%d-w%d-%d", seed%4, w, rnd.IntN(3000))
					if err := db.Put([]byte(k), killVal(k, ver, rnd.IntN(300))); err != nil {
						fmt.Fprintln(os.Stderr, "put:", err)
						os.Exit(4)
					}
					ack(fmt.Sprintf("P %s %d", k, ver))
				default:
					var b Batch
					keys := make([]string, 1+rnd.IntN(6))
					for j := range keys {
						keys[j] = fmt.Sprintf("b%d-w%d-%d", seed%4, w, rnd.IntN(3000))
						b.Put([]byte(keys[j]), killVal(keys[j], ver, rnd.IntN(200)))
					}
					if err := db.Write(&b); err != nil {
						fmt.Fprintln(os.Stderr, "batch:", err)
						os.Exit(5)
					}
					ack(fmt.Sprintf("B %d %s", ver, strings.Join(keys, " ")))
				}
			}
		}()
	}
	wg.Wait()
	_ = db.Close()
	os.Exit(0)
}

// killVal is the value of write ver to key: it names both, with filler.
func killVal(key string, ver, n int) []byte {
	v := fmt.Appendf(nil, "%s|%d|", key, ver)
	for i := range n {
		v = append(v, byte('a'+(ver+i)%26))
	}
	return v
}

// parseKillVal returns the version a value names, checking it is exactly
// killVal of its key and version (of some filler length).
func parseKillVal(key string, v []byte) (int, error) {
	rest, ok := bytes.CutPrefix(v, []byte(key+"|"))
	if !ok {
		return 0, fmt.Errorf("value %.40q does not name key %q", v, key)
	}
	num, _, ok := bytes.Cut(rest, []byte("|"))
	ver, err := strconv.Atoi(string(num))
	if !ok || err != nil {
		return 0, fmt.Errorf("value %.40q of key %q is malformed", v, key)
	}
	n := len(v) - len(key) - len(num) - 2
	if !bytes.Equal(v, killVal(key, ver, n)) {
		return 0, fmt.Errorf("value of key %q version %d is damaged: %.60q", key, ver, v)
	}
	return ver, nil
}

func TestKillLoop(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	if os.Getenv(killEnv) != "" {
		t.Skip("in the child")
	}
	kills := 20
	if testing.Short() {
		kills = 8
	}
	if s := os.Getenv("MARLIN_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "MARLIN_KILLS")
		kills = n
	}
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	acked := map[string]int{} // key -> highest acknowledged version
	start := time.Now()
	var totalAcks, duringOpen int
	var segs uint64
	for kill := 0; kill < kills; kill++ {
		mode := SyncGroup
		if kill%2 == 1 {
			mode = SyncAlways
		}
		if kill%50 == 49 { // keep the directory small in long runs
			segs += killSegments(t, dir)
			dir = t.TempDir()
			clear(acked)
		}
		seed := uint64(kill + 1)
		early := rnd.IntN(8) == 0 // kill while the child may still be opening
		delay := time.Duration(rnd.IntN(300)) * time.Millisecond
		if early {
			delay = time.Duration(rnd.IntN(40)) * time.Millisecond
		}
		n, ready, stderr := runKillChild(t, dir, mode, seed, delay, early, acked)
		totalAcks += n
		if !ready {
			duringOpen++
		}
		what := fmt.Sprintf("kill %d (%v, after %v, %d acks this run): child stderr %q", kill, mode, delay, n, stderr)
		checkKilled(t, dir, acked, what)
	}
	segs += killSegments(t, dir)
	t.Logf("kill loop: %d kills survived (%d before the child had opened the database), %d acknowledged writes read back, %d segments created, in %v",
		kills, duringOpen, totalAcks, segs, time.Since(start))
}

// killSegments returns the highest segment generation in dir: the number
// of segments ever created there.
func killSegments(t *testing.T, dir string) uint64 {
	var gens uint64
	names, err := vfs.Default.List(dir)
	require.NoError(t, err)
	for _, n := range names {
		if g, ok := segment.ParseFileName(n); ok {
			gens = max(gens, g)
		}
	}
	return gens
}

// runKillChild runs the child until it is killed and records its
// acknowledgements in acked. It returns how many it read, whether the child
// got to open the database, and its stderr.
func runKillChild(t *testing.T, dir string, mode SyncMode, seed uint64, delay time.Duration, early bool,
	acked map[string]int) (int, bool, string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", killEnv, dir, int(mode), seed))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var timer <-chan time.Time
	if early {
		timer = time.After(delay)
	}
	n, ready, killed := 0, false, false
	kill := func() {
		if !killed {
			killed = true
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		}
	}
	for lines != nil {
		select {
		case <-timer:
			kill()
			timer = nil
		case line, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			f := strings.Fields(line)
			switch {
			case line == "ready":
				ready = true
				if !early {
					timer = time.After(delay)
				}
			case len(f) == 3 && f[0] == "P":
				ver, _ := strconv.Atoi(f[2])
				acked[f[1]] = max(acked[f[1]], ver)
				n++
			case len(f) >= 3 && f[0] == "B":
				ver, _ := strconv.Atoi(f[1])
				for _, k := range f[2:] {
					acked[k] = max(acked[k], ver)
				}
				n++
			default:
				t.Fatalf("child printed %q", line)
			}
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL,
		"the child must die by SIGKILL, got %v; stderr %q", err, stderr.String())
	return n, ready, stderr.String()
}

// checkKilled opens the killed child's directory and checks every
// acknowledged write, then closes it and verifies it.
func checkKilled(t *testing.T, dir string, acked map[string]int, what string) {
	t.Helper()
	o := killOpts(SyncGroup)
	db, err := Open(dir, o)
	require.NoError(t, err, what)
	for k, ver := range acked {
		v, err := db.Get([]byte(k))
		require.NoError(t, err, "%s: acknowledged key %s (version %d)", what, k, ver)
		got, err := parseKillVal(k, v)
		require.NoError(t, err, what)
		require.GreaterOrEqual(t, got, ver, "%s: key %s reads version %d, older than the acknowledged %d", what, k, got, ver)
	}
	count := 0
	require.NoError(t, db.ForEach(func(k, v []byte) error {
		count++
		_, err := parseKillVal(string(k), v)
		return err
	}), what)
	require.GreaterOrEqual(t, count, len(acked), what)
	require.NoError(t, db.Close(), what)
	o.FS = vfs.Default
	rep, err := Verify(dir, o)
	require.NoError(t, err, what)
	require.True(t, rep.OK(), "%s: verify: %v", what, rep.Problems)
}
