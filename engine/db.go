// Package engine is Marlin's public API: a persistent hash table that keeps
// a compact index in memory (package index) and the data in append-only
// segment files (package segment).
//
// A DB is safe for concurrent use by many goroutines. Reads take no lock:
// they look the key's hash up in the index, then read the record through a
// read-only mmap of its segment (or from the active segment's in-memory
// tail) and compare the full key. Writes are serialized by one mutex; they
// append a record to the active segment's tail and point the index at it.
package engine

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// LockFileName is the lock file that keeps a second writer out.
const LockFileName = "LOCK"

// DB is an open Marlin database.
type DB struct {
	dir  string
	opts Options
	fs   vfs.FS
	lock io.Closer
	// fill is the fill queue (Options.Loader), nil without; set at Open,
	// closed first by Close.
	fill *fill.Queue
	// meta is the database's identity (MARLIN file) and hash is the keyed
	// key hash derived from it; both are set by recover before anything
	// is read and never change afterwards.
	meta  *dbMeta
	hash  func([]byte) uint64
	lim   segment.Limits
	ix    *index.Index
	guard opGuard

	// segs maps a segment id to its open segment; readers load it without a
	// lock. A slot changes only under mu.
	segs [segment.MaxSegments]atomic.Pointer[segFile]

	// mu serializes writers. It guards active, tail appends, nextSeq,
	// nextGen, failed, and segment creation.
	mu      sync.Mutex
	active  *segFile
	tail    tailBuf
	nextSeq uint64
	nextGen uint64
	failed  error // sticky: set when a write or fsync failed

	// tailMu guards the reuse of the tail buffer: a flush holds it for
	// writing while it writes the buffer out and empties it; a reader of
	// bytes not yet flushed holds it for reading while it uses them.
	tailMu sync.RWMutex

	// Durability: waiters for group commit sleep on syncCond until the
	// active segment's durable size passes their record.
	syncMu   sync.Mutex
	syncCond *sync.Cond
	syncErr  error // guarded by syncMu: a failed fsync, for waiters
	// flushFails counts failed flushes (a full disk), flushErr is the
	// latest; waiters that see the count move give up. Guarded by syncMu.
	flushFails uint64
	flushErr   error
	syncKick   chan struct{} // wakes the flusher (buffered, 1)
	stopFlush  chan struct{}
	flushDone  chan struct{}

	// Long-running work (background workers, Compact) registers in bg so
	// that Close can stop it (stopBg) and wait for it before releasing
	// anything. lifeMu guards closing and the Add calls on bg.
	lifeMu  sync.Mutex
	closing bool
	bg      sync.WaitGroup
	stopBg  chan struct{}

	// compactMu serializes compaction passes (and, with them, everything
	// that must not see segments disappear midway).
	compactMu sync.Mutex
	// retiring marks segment ids whose file is being removed: not in segs
	// any more, but not reusable until the removal is durable. Guarded by mu.
	retiring [segment.MaxSegments]bool
	// usedIDs counts the ids taken: open segments (in segs) and retiring
	// ones. Kept so that free ids are counted in O(1): compaction asks
	// for every candidate, and with 8192 segments a count by scanning made
	// a pass quadratic. Guarded by mu (Open sets it before any worker).
	usedIDs     int
	compactKick chan struct{} // wakes the compactor (buffered, 1)
	// awaiting lists compacted segments whose files are deleted after the
	// next snapshot (which does not list them) is durable; their ids stay
	// retiring until then. damaged holds the generations compaction skips
	// until reopen (a record that does not decode, or live bytes that do
	// not go away). idFloor is how many segment ids a new segment must
	// leave free (see idReserve). All guarded by mu; awaiting and damaged
	// change only with compactMu held too.
	awaiting []retiredSeg
	damaged  map[uint64]bool
	idFloor  int
	// Cache mode (evict.go), guarded by mu: evicting is set while an
	// eviction pass runs; evictShadow is the newest evicted generation
	// whose file may still be on disk (0: none), which a delete of an
	// absent key must shadow. readBits is the second-chance state (nil
	// without EvictSecondChance; set at Open, its bits atomic).
	evicting    bool
	evictShadow uint64
	readBits    *readBits
	// idWaiters counts writes waiting for segment ids (reclaimIDs): a
	// compaction pass in progress then lets its retired segments go at
	// once instead of at its end (freeIDsIfShort).
	idWaiters atomic.Int32

	// base is the current base bundle (nil: none); readers load it
	// without a lock, and it changes only under mu (SetBase, Fold), after
	// which a grace period passes before the old one is released.
	// folding counts folds in progress (guarded by mu): while it is
	// non-zero every delete writes a mask (base.go). foldMu serializes
	// base switches.
	base    atomic.Pointer[baseLayer]
	folding int
	foldMu  sync.Mutex
	// foldAddHook, a test hook (nil: none), runs after each pair a fold
	// adds to its bundle.
	foldAddHook func()

	// Snapshot bookkeeping, guarded by mu: the newest snapshot's number,
	// the write count it covers, and when it was taken.
	snapSeq     uint64
	snapValid   bool // a snapshot on disk matches the segments
	snapWritten int64
	snapAt      time.Time
	// snapRewritten is the compaction byte count the newest snapshot
	// covers: compaction moves entries without user writes.
	snapRewritten int64
	// snapLogBytes is st.bytesWritten when the newest snapshot started:
	// the log written since is what SnapshotLogRatio weighs.
	snapLogBytes int64

	// provenSize maps a segment generation to the size the newest index
	// snapshot proves was fsynced (see proven.go). Set during recovery only.
	provenSize map[uint64]int64

	// Test hooks of this DB (nil: none). snapshotCopyHook runs in
	// writeSnapshot after the replay position is recorded and before the
	// index is copied (writes it makes are the ones a fuzzy copy may or
	// may not catch); snapshotTrailerHook after the copy and before the
	// trailer's figures are taken. Per DB, so that parallel tests and
	// the databases a checker opens never see another's hook.
	snapshotCopyHook    atomic.Pointer[func()]
	snapshotTrailerHook atomic.Pointer[func()]

	// clockFloor is the latest time (Unix ms) DB.now has returned: expiry
	// never goes backwards with the clock.
	clockFloor atomic.Int64

	// scans lists the log scans in progress (iterators, scan.go) with the
	// segment generations each one pins: compaction neither copies from
	// nor retires a pinned segment. Guarded by mu.
	scans map[*scanPin]struct{}

	// salvaged lists the damage a salvaging Open skipped (Options.Salvage);
	// written only during Open.
	salvaged []SalvageSkip

	st counters

	// cold is the state of the cold read path (coldread.go).
	cold coldReads
}

// segFile is one open segment.
type segFile struct {
	id   uint16
	gen  uint64
	name string // path
	f    vfs.File
	m    vfs.Mapping
	data []byte // the mapping's bytes; only [0, flushed) may be read

	flushed atomic.Int64 // bytes written to the file (readable through data)
	durable atomic.Int64 // bytes known to be fsynced
	live    atomic.Int64 // bytes of records the index points at
	dead    atomic.Int64 // bytes of superseded records, dead tombstones, markers
	// tomb is the bytes of tombstones that may still be needed (they
	// shadow a record in a segment of generation up to tombMaxShadow);
	// they become reclaimable once every other segment is newer than
	// tombMaxShadow (see compact.go). dead + live + tomb + header = size.
	tomb          atomic.Int64
	tombMaxShadow atomic.Uint64
	// ttlMin is the earliest expiry (unix ms) of any record in the segment
	// not yet known to be reclaimed, or 0 if none; the expirer scans only
	// segments whose ttlMin has passed.
	ttlMin atomic.Int64
	sealed atomic.Bool
	// marked is the durable size the last sync mark recorded; guarded by
	// DB.mu.
	marked int64
	// res remembers which pages were recently found resident (ReadAuto,
	// residency.go); nil until the first check.
	res atomic.Pointer[resMap]
}

// tailBuf is the active segment's unflushed tail, in off-heap memory.
type tailBuf struct {
	buf   []byte       // arena memory, owned by the DB until Close
	start int64        // segment offset of buf[0]; changes under tailMu
	n     atomic.Int64 // bytes of buf in use; grows under mu
}

// Open opens (creating if needed) the database in dir. opts may be nil.
func Open(dir string, opts *Options) (*DB, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory name", ErrBadOptions)
	}
	lockFn := o.FS.Lock
	if o.ReadOnly {
		fi, err := o.FS.Stat(dir)
		if err != nil {
			// Wrapped, so that callers can tell a missing directory
			// (fs.ErrNotExist) from an I/O error.
			return nil, fmt.Errorf("marlin: open %s read-only: %w", dir, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("marlin: open %s read-only: not a directory", dir)
		}
		lockFn = o.FS.RLock
	} else if err := mkdirDurable(o.FS, dir); err != nil {
		return nil, fmt.Errorf("marlin: create %s: %w", dir, err)
	}
	lock, err := lockFn(filepath.Join(dir, LockFileName))
	if err != nil {
		return nil, fmt.Errorf("marlin: open %s: %w", dir, err)
	}
	db := &DB{
		dir:  dir,
		opts: o,
		fs:   o.FS,
		lock: lock,
		// Decoding checks lengths against what the format allows, never
		// against this open's options (SegmentSize, MaxKeySize,
		// MaxValueSize): a record written under larger options is still
		// valid data after they are lowered, and a record can never be
		// larger than its segment file, which Decode bounds by the buffer.
		lim:       segment.FormatLimits,
		nextSeq:   1,
		nextGen:   1,
		idFloor:   idForPut,
		damaged:   map[uint64]bool{},
		syncKick:  make(chan struct{}, 1),
		stopFlush: make(chan struct{}),
		flushDone: make(chan struct{}),
		stopBg:    make(chan struct{}),

		compactKick: make(chan struct{}, 1),
	}
	db.syncCond = sync.NewCond(&db.syncMu)
	if o.EvictSecondChance && !o.ReadOnly {
		db.readBits = newReadBits(o.MaxDiskBytes)
	}
	db.initColdReads()
	if err := db.open(); err != nil {
		db.release()
		return nil, err
	}
	if o.ReadOnly {
		close(db.flushDone)
		return db, nil
	}
	go db.flusher()
	db.startWorkers()
	if err := db.startFill(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) open() error {
	ix, err := index.New(int(db.opts.IndexReserve))
	if err != nil {
		return fmt.Errorf("marlin: %w", err)
	}
	db.ix = ix
	buf, err := arena.Map(db.opts.WriteBufferSize)
	if err != nil {
		return fmt.Errorf("marlin: %w", err)
	}
	db.tail.buf = buf
	if err := db.recover(); err != nil {
		return err
	}
	if err := db.recordBase(); err != nil {
		return err
	}
	db.noteSizeLocked()
	return nil
}

// Close flushes and fsyncs the active segment and releases everything.
// Operations in flight finish first; every later call returns ErrClosed. A
// second Close returns nil. If the handle has failed (ErrFailed), Close
// releases everything and returns that error: writes it had not made
// durable are lost.
func (db *DB) Close() error {
	db.lifeMu.Lock()
	if db.closing {
		db.lifeMu.Unlock()
		return nil
	}
	db.closing = true
	db.lifeMu.Unlock()
	// Loads in flight store their values before the database stops.
	db.stopFill()
	close(db.stopBg)
	db.bg.Wait()
	db.guard.close()
	close(db.stopFlush)
	<-db.flushDone
	db.mu.Lock()
	var err error
	if db.failed == nil && db.active != nil && !db.opts.ReadOnly {
		err = db.syncActiveLocked()
		if err == nil {
			// A sync mark after the data lets the next Open tell later
			// damage to it from a torn tail.
			db.markLocked(0)
			err = db.syncActiveLocked()
		}
	}
	snap := err == nil && db.needSnapshotLocked()
	if err == nil && db.failed != nil {
		// The handle failed earlier (maybe in background work, which only
		// logs), and what it had not made durable is discarded: a nil
		// error here would tell the caller that every write before Close
		// is durable.
		err = db.failed
	}
	db.mu.Unlock()
	if snap {
		db.compactMu.Lock()
		err = db.snapshotLocked(nil)
		db.compactMu.Unlock()
	}
	if rerr := db.release(); err == nil {
		err = rerr
	}
	return err
}

// release closes files and frees memory. Nothing may run concurrently.
func (db *DB) release() error {
	var errs []error
	if b := db.base.Swap(nil); b != nil {
		errs = append(errs, b.r.Close()) // iterators cannot read it: the DB is closed
	}
	for i := range db.segs {
		if sf := db.segs[i].Swap(nil); sf != nil {
			errs = append(errs, sf.close())
		}
	}
	if db.ix != nil {
		errs = append(errs, db.ix.Close())
		db.ix = nil
	}
	if db.tail.buf != nil {
		errs = append(errs, arena.Unmap(db.tail.buf))
		db.tail.buf = nil
	}
	if db.lock != nil {
		errs = append(errs, db.lock.Close())
		db.lock = nil
	}
	return errors.Join(errs...)
}

func (sf *segFile) close() error {
	var errs []error
	if sf.m != nil {
		errs = append(errs, sf.m.Close())
	}
	if sf.f != nil {
		errs = append(errs, sf.f.Close())
	}
	return errors.Join(errs...)
}

// Dir returns the database directory.
func (db *DB) Dir() string { return db.dir }

func (db *DB) enter() (token, error) {
	t, ok := db.guard.enter()
	if !ok {
		return t, ErrClosed
	}
	return t, nil
}

func (db *DB) exit(t token) { db.guard.exit(t) }

// startBg registers long-running work that Close must wait for.
func (db *DB) startBg() error {
	db.lifeMu.Lock()
	defer db.lifeMu.Unlock()
	if db.closing {
		return ErrClosed
	}
	db.bg.Add(1)
	return nil
}

// stopping reports whether Close asked background work to stop.
func (db *DB) stopping() bool {
	select {
	case <-db.stopBg:
		return true
	default:
		return false
	}
}

// startWorkers starts the background workers.
func (db *DB) startWorkers() {
	db.snapAt = time.Now()
	if (db.opts.CompactionThreshold >= 0 || db.opts.MaxDiskBytes > 0) && db.startBg() == nil {
		go db.compactor()
	}
	if !db.opts.DisableSnapshots && db.startBg() == nil {
		go db.snapshotter()
	}
	if db.opts.ExpiryInterval > 0 && db.startBg() == nil {
		go db.expirer()
	}
}
