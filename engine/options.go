package engine

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// SyncMode says when writes are made durable with fsync. See docs/design.md
// for exactly what each mode promises after a crash.
type SyncMode int

// defaultSnapshotLogRatio: background snapshots write at most half the
// log's bytes (docs/design.md, Snapshot scheduling).
const defaultSnapshotLogRatio = 2

const (
	// SyncGroup (the default): a write returns once an fsync covering it has
	// completed. A background flusher issues one fsync for all writes that
	// arrived while the previous one ran, so concurrent writers share it.
	SyncGroup SyncMode = iota
	// SyncAlways: every write is written and fsynced before it returns, one
	// at a time. The slowest and simplest promise.
	SyncAlways
	// SyncPeriodic: writes return at once; the flusher writes and fsyncs
	// every SyncInterval. A crash loses at most about one interval of writes.
	SyncPeriodic
	// SyncNone: writes return at once; data reaches the OS when the write
	// buffer fills or every SyncInterval, and is fsynced only on Sync, on a
	// segment roll and on Close. A process crash loses at most one interval;
	// a power loss may lose anything not fsynced.
	SyncNone
)

// String returns the mode's name (group, always, periodic, none), which
// ParseSyncMode reads back.
func (m SyncMode) String() string {
	switch m {
	case SyncGroup:
		return "group"
	case SyncAlways:
		return "always"
	case SyncPeriodic:
		return "periodic"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode parses the String form of a SyncMode, in any case
// ("Periodic", "NONE"), ignoring surrounding space.
func ParseSyncMode(s string) (SyncMode, error) {
	for m := SyncGroup; m <= SyncNone; m++ {
		if strings.EqualFold(m.String(), strings.TrimSpace(s)) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown sync mode %q (want group, always, periodic or none)", ErrBadOptions, s)
}

// Options configure a DB. The zero value (or nil) gives the defaults.
type Options struct {
	// FS is the filesystem; nil means the operating system's.
	FS vfs.FS
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started. Default 128 MiB, which is also the maximum (a
	// location addresses offsets below 128 MiB); minimum 4 KiB.
	SegmentSize int64
	// MaxKeySize bounds key length. Default 250 (memcached's); at most 65535.
	MaxKeySize int
	// MaxValueSize bounds value length. Default 1 MiB; a record must fit in
	// a segment.
	MaxValueSize int
	// Sync is the durability mode. Default SyncGroup.
	Sync SyncMode
	// SyncInterval is the period of SyncPeriodic and SyncNone flushes.
	// Default 100ms.
	SyncInterval time.Duration
	// WriteBufferSize is the size of the active segment's in-memory tail
	// (off-heap). Default 1 MiB.
	WriteBufferSize int
	// IndexReserve is the address space reserved for the index's slots
	// (memory is committed only as it is used). Default 256 GiB; Open halves
	// it until the OS accepts.
	IndexReserve int64
	// CompactionThreshold is the dead share of a sealed segment (dead bytes
	// over record bytes) at which the background compactor rewrites it.
	// Default 0.5; a negative value turns background compaction off
	// (Compact still works, and a delete that finds no segment id still
	// compacts what it needs: deletes are never blocked by a full log).
	CompactionThreshold float64
	// CompactionRate bounds the background compactor's reading, in bytes per
	// second, so foreground latency stays flat. Default 64 MiB/s.
	CompactionRate int64
	// CompactionInterval is the period of the background compactor's
	// passes (a segment roll also wakes it). Default 5s.
	CompactionInterval time.Duration
	// SnapshotInterval, SnapshotRecords and SnapshotChangeRatio say when
	// the background worker writes an index snapshot (a snapshot of 10^9
	// keys is about 8 GB, so only when enough changed): after
	// SnapshotInterval (default 10 minutes) if anything changed (writes,
	// compaction), or once the writes since the last snapshot reach both
	// SnapshotRecords (default 10 million) and SnapshotChangeRatio (default
	// 0.25) times the number of keys. Compaction also writes one when the
	// segments it retired hold max(64 MiB, the snapshot's size) or 1/8 of
	// the segment ids, or when segment ids run short (a compacted
	// segment's file is deleted only after a snapshot that does not list
	// it), and Compact and Close write one when anything changed.
	//
	// SnapshotLogRatio gates the interval and the change rule: the log
	// written since the last snapshot (bytes appended to segments, user
	// writes and compaction copies) must be at least SnapshotLogRatio
	// times the size of the snapshot to write (about 8 bytes per key).
	// Background snapshots then write at most 1/SnapshotLogRatio of the
	// log's bytes: with the default 2, a process's writes are at most 1.5
	// times the log it produces (plus the snapshot Close writes); the
	// price is a crash replay of up to 2 snapshot sizes of log (about 40%
	// of the keys as thin records). Negative turns the gate off.
	SnapshotInterval    time.Duration // see above (default 10 minutes)
	SnapshotRecords     int64         // see above (default 10 million)
	SnapshotChangeRatio float64       // see above (default 0.25)
	SnapshotLogRatio    float64       // see above (default 2; negative: no gate)
	// MaxDiskBytes turns on cache mode: when the database's files (segments,
	// those awaiting deletion, and an index snapshot's estimated size) pass
	// it, the background worker evicts the oldest segments whole, first in,
	// first out, down to the limit less a slack (a sixteenth of it, at
	// least a segment and twice the snapshot's size, at most half of it),
	// and a snapshot then deletes their files. Evicted keys read as absent.
	// 0 (the default) never evicts. At least 4 SegmentSize. See evict.go
	// for what eviction promises after a crash.
	MaxDiskBytes int64
	// EvictSecondChance (with MaxDiskBytes) copies a key read recently
	// (within about the last half to whole MaxDiskBytes of writes) forward
	// instead of evicting it, up to half of each evicted segment. Reads
	// then set a bit in one of two bitmaps of MaxDiskBytes/2048 bytes each
	// (8 KiB to 256 MiB) indexed by key hash, so a key that shares its bit
	// with a read one may be kept too.
	EvictSecondChance bool
	// DisableSnapshots turns index snapshots off: every Open replays the
	// whole log.
	DisableSnapshots bool
	// ExpiryInterval is the period of the expirer's passes, which remove
	// expired keys from the index (they are invisible to reads at once).
	// Default 1s; negative turns the expirer off.
	ExpiryInterval time.Duration
	// ExpiryBudget bounds the records one expirer pass reads. Default
	// 100000.
	ExpiryBudget int
	// ReadOnly opens the directory for reading only: it takes a shared lock
	// (any number of read-only opens may coexist, but none with a writer),
	// modifies nothing on disk (a torn tail is ignored, not truncated), and
	// every write returns ErrReadOnly. Meant for closed databases and
	// checkpoints.
	ReadOnly bool
	// Salvage (only with ReadOnly) makes Open succeed on a damaged log: a
	// replay that meets a record it cannot read skips to the next record
	// that decodes instead of failing with ErrCorrupt, and DB.Salvaged
	// lists what was skipped. The index then holds every readable record;
	// a key whose newest record was in a skipped range reads as its newest
	// readable version (or a deleted key as present), so salvage is for
	// copying data out (marlin dump --skip-corrupt), never for serving.
	Salvage bool
	// Logger receives warnings (torn tails truncated at Open, and the like).
	// Default slog.Default().
	Logger *slog.Logger
	// Clock is the time source for TTLs: it stamps expiry times at writes
	// and decides, at reads, in the expirer and in compaction, whether a
	// record has expired. Default time.Now. Every expiry decision goes
	// through one DB.now, which never moves backwards: it is the highest
	// of Clock and every time the DB has used before, including the
	// creation time of the snapshot it opened from (see docs/design.md,
	// Expiry and clocks). Tests inject a fake clock here.
	Clock func() time.Time
	// ReadMode says how reads of records in segment files reach the disk:
	// ReadAuto (default: through the mapping, or with pread when a large
	// database's record is not in the page cache), ReadMmap or ReadPread.
	// See docs/design.md, "Large-data read path".
	ReadMode ReadMode

	// KeyNormalizer, if set, rewrites every key given to a read or write
	// method to its canonical form first (see KeyNormalizer); the
	// database stores only canonical keys. keynorm.New makes one for
	// composite keys.
	KeyNormalizer KeyNormalizer
	// Loader, if set, makes reads fill the database from a slow source
	// without waiting: a read that finds nothing returns ErrNotFound at
	// once and queues the key; background workers call Loader and store
	// what it returns (see fill.Queue and docs/design.md, Fill queue).
	// Not allowed with ReadOnly.
	Loader fill.Loader
	// Fill configures the fill queue (workers, queue size, negative TTL,
	// retries, per-load timeout); used only with Loader.
	Fill fill.Options

	// Base names a base bundle (see package bundle) under the database:
	// reads that find nothing in the database look in it, deletes of its
	// keys write masks that hide them, and iteration sees the merged view
	// (docs/design.md, "Base and delta"). A new database records it in
	// its BASE file; a database that has one opens that base, and a Base
	// naming another file is an error (switch with SetBase or Fold). An
	// approximate bundle cannot be a base.
	Base string

	// hash, if set, replaces the database's keyed hash in tests (to force
	// collisions).
	hash func([]byte) uint64
	// manualEvict keeps cache mode's eviction out of the background worker:
	// tests run evictPass themselves.
	manualEvict bool
	// dropSnapshots makes Open delete the index snapshots (under its lock)
	// before recovering: Repair's rebuild.
	dropSnapshots bool
}

const (
	defaultSegmentSize  = 128 << 20
	minSegmentSize      = 4 << 10
	defaultMaxKeySize   = 250
	defaultMaxValueSize = 1 << 20
	defaultInterval     = 100 * time.Millisecond
	defaultWriteBuffer  = 1 << 20
	defaultIndexReserve = 256 << 30

	defaultCompactionThreshold = 0.5
	defaultCompactionRate      = 64 << 20

	// minInterval bounds SyncInterval from below: a shorter period would
	// make the flusher spin. minWorkerInterval does the same for the
	// snapshotter and the expirer.
	minInterval       = time.Millisecond
	minWorkerInterval = 10 * time.Millisecond
)

// withDefaults returns a validated copy of o with defaults filled in.
func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = defaultSegmentSize
	}
	if c.MaxKeySize == 0 {
		c.MaxKeySize = defaultMaxKeySize
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = min(defaultMaxValueSize, int(c.SegmentSize/2))
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = defaultInterval
	}
	if c.WriteBufferSize == 0 {
		c.WriteBufferSize = int(min(defaultWriteBuffer, c.SegmentSize))
	}
	if c.IndexReserve == 0 {
		c.IndexReserve = defaultIndexReserve
	}
	if c.CompactionThreshold == 0 {
		c.CompactionThreshold = defaultCompactionThreshold
	}
	if c.CompactionRate == 0 {
		c.CompactionRate = defaultCompactionRate
	}
	if c.CompactionInterval == 0 {
		c.CompactionInterval = 5 * time.Second
	}
	if c.SnapshotChangeRatio == 0 {
		c.SnapshotChangeRatio = 0.25
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 10 * time.Minute
	}
	if c.SnapshotLogRatio == 0 {
		c.SnapshotLogRatio = defaultSnapshotLogRatio
	}
	if c.SnapshotRecords == 0 {
		c.SnapshotRecords = 10_000_000
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = time.Second
	}
	if c.ExpiryBudget == 0 {
		c.ExpiryBudget = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	bad := func(format string, args ...any) (Options, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
	}
	switch {
	case c.Salvage && !c.ReadOnly:
		return bad("Salvage needs ReadOnly")
	case c.Loader != nil && c.ReadOnly:
		return bad("Loader needs a writable database")
	case math.IsNaN(c.CompactionThreshold) || math.IsInf(c.CompactionThreshold, 0):
		return bad("CompactionThreshold %v is not a number in [-1, 1]", c.CompactionThreshold)
	case c.SegmentSize < minSegmentSize || c.SegmentSize > segment.MaxSegmentSize:
		return bad("SegmentSize %d not in [%d, %d]", c.SegmentSize, minSegmentSize, segment.MaxSegmentSize)
	case c.MaxKeySize < 1 || c.MaxKeySize > segment.MaxKeyLen:
		return bad("MaxKeySize %d not in [1, %d]", c.MaxKeySize, segment.MaxKeyLen)
	case c.MaxValueSize < 0:
		return bad("MaxValueSize %d is negative", c.MaxValueSize)
	case int64(c.MaxValueSize) > c.SegmentSize:
		// Checked before the record size is computed, which would overflow
		// for values near math.MaxInt.
		return bad("MaxValueSize %d larger than SegmentSize %d", c.MaxValueSize, c.SegmentSize)
	case int64(segment.HeaderSize+segment.Size(c.MaxKeySize, c.MaxValueSize, true)) > c.SegmentSize:
		return bad("a record of MaxKeySize %d and MaxValueSize %d does not fit in SegmentSize %d",
			c.MaxKeySize, c.MaxValueSize, c.SegmentSize)
	case c.Sync < SyncGroup || c.Sync > SyncNone:
		return bad("unknown Sync mode %d", c.Sync)
	case c.SyncInterval < minInterval:
		return bad("SyncInterval %v below %v", c.SyncInterval, minInterval)
	case c.WriteBufferSize < 4096 || int64(c.WriteBufferSize) > c.SegmentSize:
		return bad("WriteBufferSize %d not in [4096, SegmentSize]", c.WriteBufferSize)
	case c.CompactionThreshold > 1:
		return bad("CompactionThreshold %v above 1", c.CompactionThreshold)
	case c.CompactionRate < 0:
		return bad("CompactionRate %d is negative", c.CompactionRate)
	case c.SnapshotInterval < minWorkerInterval:
		return bad("SnapshotInterval %v below %v", c.SnapshotInterval, minWorkerInterval)
	case c.CompactionInterval < minWorkerInterval:
		return bad("CompactionInterval %v below %v", c.CompactionInterval, minWorkerInterval)
	case math.IsNaN(c.SnapshotChangeRatio) || math.IsInf(c.SnapshotChangeRatio, 0) || c.SnapshotChangeRatio < 0:
		return bad("SnapshotChangeRatio %v is not a non-negative number", c.SnapshotChangeRatio)
	case math.IsNaN(c.SnapshotLogRatio) || math.IsInf(c.SnapshotLogRatio, 0):
		return bad("SnapshotLogRatio %v is not a number", c.SnapshotLogRatio)
	case c.SnapshotRecords < 0:
		return bad("SnapshotRecords %d is negative", c.SnapshotRecords)
	case c.ExpiryInterval > 0 && c.ExpiryInterval < minWorkerInterval:
		return bad("ExpiryInterval %v below %v (negative turns the expirer off)", c.ExpiryInterval, minWorkerInterval)
	case c.ExpiryBudget < 0:
		return bad("ExpiryBudget %d is negative", c.ExpiryBudget)
	case c.ReadMode < ReadAuto || c.ReadMode > ReadPread:
		return bad("unknown ReadMode %d", c.ReadMode)
	case c.MaxDiskBytes < 0:
		return bad("MaxDiskBytes %d is negative", c.MaxDiskBytes)
	case c.MaxDiskBytes > 0 && c.MaxDiskBytes < 4*c.SegmentSize:
		return bad("MaxDiskBytes %d below 4 SegmentSize (%d)", c.MaxDiskBytes, 4*c.SegmentSize)
	case c.EvictSecondChance && c.MaxDiskBytes == 0:
		return bad("EvictSecondChance needs MaxDiskBytes")
	case c.IndexReserve < 1<<26:
		return bad("IndexReserve %d below 64 MiB", c.IndexReserve)
	}
	return c, nil
}

// discardLogger is handy for tests and tools that want silence.
var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
