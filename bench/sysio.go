package bench

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ProcIO is the process's I/O counters from /proc/self/io. ReadBytes and
// WriteBytes count what went to or came from the block layer (page cache
// hits are not reads; dirtied pages count as written when dirtied).
type ProcIO struct {
	ReadBytes, WriteBytes int64 // see above
}

// ReadProcIO reads /proc/self/io; zeros where it is not available.
func ReadProcIO() ProcIO {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return ProcIO{}
	}
	var p ProcIO
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "read_bytes":
			p.ReadBytes = n
		case "write_bytes":
			p.WriteBytes = n
		}
	}
	return p
}

// DiskCounters are a block device's completed reads and sectors read
// (/sys/dev/block/MAJ:MIN/stat), counting every process's I/O on it.
type DiskCounters struct {
	Reads, SectorsRead int64 // reads completed; 512-byte sectors they read
	ReadMillis         int64 // time the reads spent (summed over reads in flight)
	QueueMillis        int64 // time requests spent in flight, weighted by their number
	OK                 bool  // the device was found
}

// DiskOf returns a function reading the counters of the block device that
// holds dir (a partition's own counters if dir is on a partition).
func DiskOf(dir string) func() DiskCounters {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return func() DiskCounters { return DiskCounters{} }
	}
	path := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev))
	return func() DiskCounters {
		data, err := os.ReadFile(path)
		if err != nil {
			return DiskCounters{}
		}
		// Documentation/block/stat.rst: reads, merged, sectors, ms
		// reading, writes, merged, sectors, ms writing, in flight,
		// ms busy, weighted ms in queue.
		f := strings.Fields(string(data))
		if len(f) < 11 {
			return DiskCounters{}
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		return DiskCounters{Reads: n(0), SectorsRead: n(2), ReadMillis: n(3), QueueMillis: n(10), OK: true}
	}
}

// DropPageCache writes back dirty pages and drops the page cache, so the
// next reads come from the disk. It needs root; the error says so.
func DropPageCache() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop the page cache (needs root): %w", err)
	}
	return nil
}

// DirBytes returns the disk space the files under dir take (allocated
// blocks, so a sparse file counts only what it holds).
func DirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(path, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}
