package bundle

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/vfs"
)

// BuildOptions configure a Builder. The zero value is an exact bundle with
// the default memory limit, temporary files beside the output, and a
// random seed.
type BuildOptions struct {
	// Approximate stores only the keys' hashes (a 64-bit hash and a
	// 16-bit check), not the keys: every entry is then 16 bytes whatever
	// the key's length, and a lookup of a key that was never added finds
	// some value with probability about n / 2^80 (docs/bundle.md).
	Approximate bool
	// Strict makes a key added twice an error (ErrDuplicateKey) instead of
	// the last value winning.
	Strict bool
	// MemoryLimit bounds the builder's buffers, in bytes (0:
	// DefaultMemoryLimit; at least MinMemoryLimit). Pairs are held in
	// memory up to the limit, then sorted and written to a run file; Finish
	// merges the runs. A single pair larger than the limit is written as a
	// run of its own; the merge holds at most two of the largest pair in
	// memory besides the limit.
	MemoryLimit int64
	// TempDir is where run files and spills go ("": the output's
	// directory). They need about the input's size in free space, and are
	// removed by Finish and Abort.
	TempDir string
	// Seed is the hash seed (0: drawn at random). A bundle's seed is in
	// its footer; set one only for reproducible files.
	Seed uint64
	// ValueFormat tags the values' format in the footer (ValuesPlain or
	// ValuesItems) for readers that serve them; the bundle does not
	// look at it.
	ValueFormat uint8
	// Cancel, when closed, makes Add and Finish stop with ErrCanceled
	// (the temporary files are removed; the output name is untouched).
	Cancel <-chan struct{}
}

// DefaultMemoryLimit is BuildOptions.MemoryLimit's default.
const DefaultMemoryLimit = 1 << 30

// MinMemoryLimit is the least memory limit accepted.
const MinMemoryLimit = 256 << 10

// Builder writes a bundle: Add every pair (in any order), then Finish. The
// file appears under its name only when complete: it is written to a
// temporary name beside it, fsynced, renamed, and the directory fsynced.
// A Builder is not safe for concurrent use, except Progress, which may be
// called from any goroutine.
type Builder struct {
	fs      vfs.FS
	path    string // the final name
	tmpPath string // the output's temporary name, beside path
	scratch string // directory of run and spill files (created at first use)
	o       BuildOptions
	limit   int
	seed    uint64

	buf       *runBuffer      // the add phase's buffer; nil once released
	runs      []*runFile      // sorted runs on disk, in the order they were written
	runSeq    int             // names of run files
	haveDir   bool            // scratch exists
	temps     map[string]bool // files created in scratch and not yet removed
	err       error           // the first failure: the build is over
	done      bool            // Finish or Abort was called
	published bool            // the file is under its final name
	started   time.Time
	stats     BuildStats

	nAdded  int64 // pairs added; published to added every 1024
	phase   atomic.Int32
	added   atomic.Int64
	nruns   atomic.Int32
	written atomic.Int64
}

// BuildStats describe a finished build.
type BuildStats struct {
	Added       int64         // pairs given to Add
	Entries     int64         // pairs in the bundle
	Duplicates  int64         // pairs replaced by a later pair with the same key
	Runs        int           // run files written: sorted runs, and those of intermediate merges (0: all fitted in memory)
	MergePasses int           // intermediate merge passes (runs merged into fewer, longer runs)
	ScratchRead int64         // bytes read back from run files
	FileSize    int64         // the bundle's size
	Elapsed     time.Duration // NewBuilder to the end of Finish
}

// Progress is a snapshot of a build, for a progress display.
type Progress struct {
	Phase   string // "adding", "merging runs", "writing" (and sorting, in memory), "done"
	Added   int64  // pairs added
	Runs    int    // runs written so far
	Written int64  // entries written to the output
}

var phaseNames = []string{"adding", "merging runs", "writing", "done"}

const (
	phaseAdding = iota
	phaseMerging
	phaseWriting
	phaseDone
)

// NewBuilder starts a bundle to be written to path through fs (nil:
// vfs.Default). Nothing is created until the memory limit fills or Finish.
func NewBuilder(fs vfs.FS, path string, o *BuildOptions) (*Builder, error) {
	if fs == nil {
		fs = vfs.Default
	}
	b := &Builder{fs: fs, path: path, started: time.Now()}
	if o != nil {
		b.o = *o
	}
	if b.o.ValueFormat > ValuesItems {
		return nil, fmt.Errorf("bundle: value format %d (want ValuesPlain or ValuesItems)", b.o.ValueFormat)
	}
	switch {
	case b.o.MemoryLimit == 0:
		b.limit = DefaultMemoryLimit
	case b.o.MemoryLimit < MinMemoryLimit:
		return nil, fmt.Errorf("bundle: memory limit %d below the minimum %d", b.o.MemoryLimit, MinMemoryLimit)
	default:
		b.limit = int(min(b.o.MemoryLimit, 1<<46))
	}
	dir := filepath.Dir(path)
	if fi, err := fs.Stat(dir); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("bundle: %s is not a directory", dir)
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	b.seed = b.o.Seed
	if b.seed == 0 {
		b.seed = binary.LittleEndian.Uint64(rnd[:]) | 1
	}
	tag := fmt.Sprintf("%016x", binary.LittleEndian.Uint64(rnd[8:]))
	base := filepath.Base(path)
	b.tmpPath = filepath.Join(dir, "."+base+"."+tag+".tmp")
	sdir := b.o.TempDir
	if sdir == "" {
		sdir = dir
	}
	b.scratch = filepath.Join(sdir, "."+base+"."+tag+".scratch")
	buf, err := newRunBuffer(b.limit)
	if err != nil {
		return nil, err
	}
	b.buf = buf
	return b, nil
}

// Add adds a pair. The key and value are copied; the caller keeps them. A
// key longer than MaxKeyLen is refused with ErrTooLarge (the build goes
// on); any other error ends the build (later calls return it).
func (b *Builder) Add(key, value []byte) error {
	switch {
	case b.err != nil:
		return b.err
	case b.done:
		return ErrClosed
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes (at most %d)", ErrTooLarge, len(key), MaxKeyLen)
	}
	if b.nAdded&1023 == 0 {
		b.added.Store(b.nAdded)
		if b.canceled() {
			return b.fail(ErrCanceled)
		}
	}
	h := hashKey(key, b.seed)
	if !b.buf.add(h, key, value) {
		if b.buf.n > 0 {
			if err := b.spill(); err != nil {
				return b.fail(err)
			}
		}
		if !b.buf.add(h, key, value) {
			// Larger than the whole buffer: a run of its own.
			run, err := b.writeRun(func(rw *runWriter) error { return rw.add(h, key, value) })
			if err != nil {
				return b.fail(err)
			}
			b.runs = append(b.runs, run)
		}
	}
	b.nAdded++
	return nil
}

func (b *Builder) canceled() bool {
	if b.o.Cancel == nil {
		return false
	}
	select {
	case <-b.o.Cancel:
		return true
	default:
		return false
	}
}

// fail ends the build with err: temporary files are removed.
func (b *Builder) fail(err error) error {
	if b.err == nil {
		b.err = err
	}
	b.cleanup()
	return b.err
}

// Progress returns a snapshot of the build; safe from any goroutine.
func (b *Builder) Progress() Progress {
	return Progress{
		Phase:   phaseNames[b.phase.Load()],
		Added:   b.added.Load(),
		Runs:    int(b.nruns.Load()),
		Written: b.written.Load(),
	}
}

// Stats describes the build; complete after a successful Finish.
func (b *Builder) Stats() BuildStats { return b.stats }

// Abort ends a build without a bundle, removing the temporary files. It
// is safe to call at any time, more than once, and after Finish (then it
// does nothing: a finished bundle stays).
func (b *Builder) Abort() error {
	if b.published {
		return nil
	}
	b.done = true
	if b.err == nil {
		b.err = ErrClosed
	}
	b.cleanup()
	return nil
}

// cleanup releases the buffer and removes every temporary file (best
// effort: a failing disk may leave some, never under the final name).
func (b *Builder) cleanup() {
	if b.buf != nil {
		b.buf.release()
		b.buf = nil
	}
	if !b.published {
		_ = b.fs.Remove(b.tmpPath)
	}
	b.runs = nil
	for name := range b.temps {
		b.removeTemp(name)
	}
	if b.haveDir && b.fs.Remove(b.scratch) == nil {
		b.haveDir = false
	}
}

// removeTemp removes a scratch file; one that cannot be removed now is
// tried again by cleanup.
func (b *Builder) removeTemp(name string) {
	if err := b.fs.Remove(name); err == nil || errors.Is(err, fs.ErrNotExist) {
		delete(b.temps, name)
	}
}

// scratchName returns a new file name in the scratch directory, creating
// the directory at first use.
func (b *Builder) scratchName(kind string) (string, error) {
	if !b.haveDir {
		if err := b.fs.MkdirAll(b.scratch, 0o755); err != nil {
			return "", err
		}
		b.haveDir = true
	}
	b.runSeq++
	name := filepath.Join(b.scratch, fmt.Sprintf("%s-%06d", kind, b.runSeq))
	if b.temps == nil {
		b.temps = map[string]bool{}
	}
	b.temps[name] = true
	return name, nil
}

// spill sorts the buffer and writes it as a run.
func (b *Builder) spill() error {
	run, err := b.writeRun(func(rw *runWriter) error {
		src := memSource{rb: b.buf}
		for {
			_, rec, _, _, ok := src.nextRecord()
			if !ok {
				return nil
			}
			if err := rw.addRecord(rec); err != nil {
				return err
			}
		}
	})
	b.buf.reset()
	if err != nil {
		return err
	}
	b.runs = append(b.runs, run)
	return nil
}

// errRunDamaged marks a run file that did not read back as written.
var errRunDamaged = errors.New("bundle: a temporary run file read back damaged")
