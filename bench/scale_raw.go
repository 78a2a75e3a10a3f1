package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawDisk is the reference the cold phases are read against: random 4 KiB
// reads of the segment files with O_DIRECT (no page cache, no engine) from
// the same number of goroutines. Cloud and virtual disks often allow a
// burst of IOPS and then throttle (the test machine: 45-70k reads/s for
// about 10 s, then 10-12k for about 30 s), so a cold phase's rate means
// little without the disk's own rate around the same time.
type rawDisk struct {
	fds   []int
	sizes []int64
}

func openRawDisk(dir string) (*rawDisk, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		return nil, err
	}
	rd := &rawDisk{}
	for _, name := range names {
		fd, err := unix.Open(name, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err != nil {
			rd.close()
			return nil, &os.PathError{Op: "open O_DIRECT", Path: name, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			_ = unix.Close(fd)
			rd.close()
			return nil, &os.PathError{Op: "stat", Path: name, Err: err}
		}
		if st.Size >= 4096 {
			rd.fds = append(rd.fds, fd)
			rd.sizes = append(rd.sizes, st.Size)
		} else {
			_ = unix.Close(fd)
		}
	}
	if len(rd.fds) == 0 {
		return nil, fmt.Errorf("no segment files in %s", dir)
	}
	return rd, nil
}

func (rd *rawDisk) close() {
	for _, fd := range rd.fds {
		_ = unix.Close(fd)
	}
	rd.fds = nil
}

// read does one random aligned 4 KiB read into w's aligned buffer.
func (rd *rawDisk) read(w *scaleWorker) error {
	if w.raw == nil {
		b := make([]byte, 8192)
		at := 4096 - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4096)
		w.raw = b[at : at+4096]
	}
	i := w.rnd.IntN(len(rd.fds))
	off := w.rnd.Int64N(rd.sizes[i]/4096) * 4096
	if _, err := unix.Pread(rd.fds[i], w.raw, off); err != nil {
		return fmt.Errorf("raw disk read at %d: %w", off, err)
	}
	return nil
}
