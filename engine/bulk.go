package engine

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Bulk loading builds a new database from a stream of pairs without the
// write path: no index walk per record, no group commit, no background
// work. See docs/design.md, "Bulk load". In short:
//
//  1. Log pass: each pair becomes a record (sequence numbers 1..n in input
//     order) appended to segments written sequentially, and a 16-byte
//     entry {hash, location and size} is appended to one of bulkParts
//     partitions chosen by the hash's top bits (spill.go).
//  2. Index pass: each partition in turn (two at a time, one per core) is
//     read back, sorted by (hash, location) in off-heap memory, reduced to
//     the newest record of each key, and streamed as shard runs into an
//     index snapshot. Partitions are contiguous ranges of shards, so the
//     snapshot comes out in shard order without a merge.
//  3. Publish: segments and snapshot are fsynced, the identity file MARLIN
//     is written, and the staging directory is renamed to the target.
//
// Everything is built in a staging directory beside the target
// (bulkStagingName), so an interrupted or failed load never leaves a
// partial database where Open would find it: the target is either absent
// (or still empty) or a complete, fsynced database.

// BulkSource yields the pairs to load. Next returns io.EOF after the last
// pair; any other error stops the load (nothing is published). The slices
// it returns need only stay valid until the next call.
type BulkSource interface {
	Next() (key, value []byte, err error)
}

// BulkSourceFunc adapts a function to BulkSource.
type BulkSourceFunc func() (key, value []byte, err error)

// Next calls f.
func (f BulkSourceFunc) Next() ([]byte, []byte, error) { return f() }

// BulkOptions tunes BulkLoad. The zero value (or nil) is fine.
type BulkOptions struct {
	// Progress, if set, is called from the loading goroutine about every
	// million records of the log pass and after each partition of the
	// index pass.
	Progress func(BulkProgress)
	// Partitions overrides the number of partitions (a power of two, at
	// most 4096; 0: bulkParts). Tests use few.
	Partitions int
}

// BulkProgress reports how far BulkLoad got.
type BulkProgress struct {
	Phase   string // "log", "index" or "publish"
	Records int64  // records read from the source so far
	// PartsDone of Parts partitions are in the snapshot (phase "index").
	PartsDone, Parts int
}

// BulkStats describes a finished bulk load.
type BulkStats struct {
	Records  int64 // pairs read from the source
	Keys     int64 // distinct keys (index entries)
	Segments int   // segment files written
	// LogBytes is the size of the segments; SpillBytes of the temporary
	// partition file (written once, read once, then removed);
	// SnapshotBytes of the index snapshot.
	LogBytes, SpillBytes, SnapshotBytes int64
	// KeyReads counts records read back to tell keys with equal hashes
	// apart (duplicates in the input, or true 64-bit hash collisions).
	KeyReads             int64
	LogPass              time.Duration // writing the log and the spill file
	IndexPass            time.Duration // building the index from the spill file
	Publish              time.Duration // writing the snapshot and making the database visible
	Total                time.Duration // the whole load
	MaxPartitionEntries  int64         // the largest partition, in entries
	PartitionBufferBytes int64         // off-heap partition buffers
}

// BulkStagingDir returns the staging directory BulkLoad builds dir's
// database in: a hidden sibling of dir, so that renaming it is atomic.
// It exists only while a load runs (or after one was interrupted).
func BulkStagingDir(dir string) string {
	d := filepath.Clean(dir)
	return filepath.Join(filepath.Dir(d), "."+filepath.Base(d)+".bulkload")
}

// BulkLoad creates a new database in dir from the pairs src yields. dir
// must not exist or be an empty directory (ErrNotEmpty otherwise): the
// bulk loader builds new databases only. When a key occurs more than once
// the last occurrence wins, as with Puts in input order. Records carry no
// expiry.
//
// On success the database is complete and durable (segments, index
// snapshot, identity, directory entries all fsynced) and Open loads it
// with its snapshot, replaying nothing. On any error (the source's, a
// limit, an I/O error) nothing is published: dir is left as it was and the
// staging directory (a hidden sibling of dir) is removed if possible; a
// crash leaves only that staging directory, which the next BulkLoad into
// dir removes.
//
// opts is used as by Open: FS, SegmentSize, MaxKeySize, MaxValueSize (and
// the hash override of tests); bo may be nil.
func BulkLoad(dir string, opts *Options, src BulkSource, bo *BulkOptions) (BulkStats, error) {
	start := time.Now()
	var st BulkStats
	o, err := opts.withDefaults()
	if err != nil {
		return st, err
	}
	if o.ReadOnly {
		return st, ErrReadOnly
	}
	if dir == "" {
		return st, fmt.Errorf("%w: empty directory name", ErrBadOptions)
	}
	if bo == nil {
		bo = &BulkOptions{}
	}
	nparts := bo.Partitions
	if nparts == 0 {
		nparts = bulkParts
	}
	if nparts < 1 || nparts > 4096 || nparts&(nparts-1) != 0 {
		return st, fmt.Errorf("%w: BulkOptions.Partitions %d: want a power of two up to 4096", ErrBadOptions, nparts)
	}
	fs := o.FS
	if err := checkBulkTarget(fs, dir); err != nil {
		return st, err
	}
	staging := BulkStagingDir(dir)
	if err := clearStaging(fs, staging); err != nil {
		return st, err
	}
	if err := mkdirDurable(fs, staging); err != nil {
		_ = removeStaging(fs, staging)
		return st, fmt.Errorf("marlin: bulk load: create %s: %w", staging, err)
	}
	lock, err := fs.Lock(filepath.Join(staging, LockFileName))
	if err != nil {
		_ = removeStaging(fs, staging)
		return st, fmt.Errorf("marlin: bulk load: %w", err)
	}
	b := &bulkBuilder{fs: fs, dir: staging, opts: o, bo: bo, st: &st}
	err = b.build(src, nparts)
	b.release()
	if err == nil {
		pstart := time.Now()
		if bo.Progress != nil {
			bo.Progress(BulkProgress{Phase: "publish", Records: st.Records})
		}
		err = publishBulk(fs, staging, dir)
		st.Publish = time.Since(pstart)
	}
	if cerr := lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("marlin: bulk load: unlock: %w", cerr)
	}
	if err != nil {
		if rerr := removeStaging(fs, staging); rerr != nil {
			err = fmt.Errorf("%w (the staging directory %s is left behind: %v; remove it, or the next bulk load will)",
				err, staging, rerr)
		}
		return st, err
	}
	st.Total = time.Since(start)
	return st, nil
}

// checkBulkTarget fails unless dir is absent or an empty directory.
func checkBulkTarget(fs vfs.FS, dir string) error {
	fi, err := fs.Stat(dir)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("marlin: bulk load: %s is not a directory", dir)
	}
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: bulk load builds a new database, and %s holds %d entries (%s...)",
			ErrNotEmpty, dir, len(names), names[0])
	}
	return nil
}

// clearStaging removes a staging directory a crashed bulk load left. A
// bulk load still running holds its lock: that is ErrLocked.
func clearStaging(fs vfs.FS, staging string) error {
	if _, err := fs.Stat(staging); errors.Is(err, iofs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("marlin: bulk load: %w", err)
	}
	lock, err := fs.Lock(filepath.Join(staging, LockFileName))
	if err != nil {
		return fmt.Errorf("marlin: bulk load: %s: another bulk load is using it: %w", staging, err)
	}
	_ = lock.Close()
	if err := removeStaging(fs, staging); err != nil {
		return fmt.Errorf("marlin: bulk load: remove the staging directory a failed load left: %w", err)
	}
	return nil
}

// removeStaging removes the staging directory and its files (it has no
// subdirectories) and makes the removal durable.
func removeStaging(fs vfs.FS, staging string) error {
	names, err := fs.List(staging)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := fs.Remove(filepath.Join(staging, n)); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
	}
	if err := fs.Remove(staging); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	return fs.SyncDir(filepath.Dir(staging))
}

// publishBulk makes the complete, fsynced staging directory the database:
// it replaces dir (absent, or an empty directory) by a rename and fsyncs
// the parent. Until the rename is durable a crash leaves dir without a
// database; afterwards dir is the whole database.
func publishBulk(fs vfs.FS, staging, dir string) error {
	if err := checkBulkTarget(fs, dir); err != nil {
		return err // something appeared in dir meanwhile
	}
	if _, err := fs.Stat(dir); err == nil {
		if err := fs.Remove(dir); err != nil { // empty: checked above
			return fmt.Errorf("marlin: bulk load: %w", err)
		}
	}
	if err := fs.Rename(staging, dir); err != nil {
		return fmt.Errorf("marlin: bulk load: publish: %w", err)
	}
	if err := fs.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		// The rename happened but may not be durable. The database in dir
		// is complete either way; report the error all the same.
		return fmt.Errorf("marlin: bulk load: publish: sync %s: %w", filepath.Dir(dir), err)
	}
	return nil
}

// bulkBuilder builds the database in the staging directory. It is used by
// one goroutine, except that the index pass runs two partition workers
// (bulkWorker) that only read its segments.
type bulkBuilder struct {
	fs   vfs.FS
	dir  string
	opts Options
	bo   *BulkOptions
	st   *BulkStats
	meta *dbMeta
	hash func([]byte) uint64

	// The log pass: the segment being written (nil before the first
	// record), its write buffer (one of the writer's, owned by the builder
	// until flush hands it over) and the bytes of it in use.
	cur   *bulkSeg
	w     *bulkWriter
	wbuf  []byte
	wn    int
	segs  []*bulkSeg // every segment, in generation order
	seq   uint64     // sequence number of the last record
	spill *spill

	// readers are the segments opened for reading back keys in the index
	// pass, by id; guarded by readMu.
	readers *segReaders
}

// bulkSeg is one segment the builder wrote. id = generation - 1.
type bulkSeg struct {
	id   uint16
	gen  uint64
	name string
	f    vfs.File // open for writing while current
	size int64    // bytes appended (written or in the write buffer)
	live int64    // bytes of the records, less those replaced (index pass)
}

// bulkWriteBuffer is the size of the log pass's write buffer.
const bulkWriteBuffer = 4 << 20

func (b *bulkBuilder) build(src BulkSource, nparts int) error {
	m, err := newMeta(time.Now(), b.opts.SegmentSize)
	if err != nil {
		return err
	}
	b.meta, b.hash = m, m.hashFunc()
	if b.opts.hash != nil {
		b.hash = b.opts.hash
	}
	if b.w, err = newBulkWriter(); err != nil {
		return err
	}
	b.wbuf = b.w.get()
	if b.spill, err = newSpill(b.fs, filepath.Join(b.dir, bulkSpillName), nparts); err != nil {
		return err
	}
	b.st.PartitionBufferBytes = int64(len(b.spill.mem))
	t0 := time.Now()
	if err := b.logPass(src); err != nil {
		return err
	}
	if err := b.spill.finish(); err != nil {
		return err
	}
	b.st.SpillBytes = b.spill.off
	b.st.LogPass = time.Since(t0)
	t1 := time.Now()
	if b.seq > 0 {
		if err := b.indexPass(); err != nil {
			return err
		}
	}
	b.st.IndexPass = time.Since(t1)
	if err := b.spill.remove(); err != nil {
		return err
	}
	// The identity goes in last: the staging directory is not a database
	// before it, and a crash before the rename leaves only staging anyway.
	if err := writeMeta(b.fs, b.dir, m); err != nil {
		return err
	}
	return nil
}

// release frees the builder's memory and closes its files (errors here
// only matter if the load otherwise succeeded, and by then every file
// that matters was fsynced and closed).
func (b *bulkBuilder) release() {
	if b.w != nil {
		b.w.close() // waits for the writes in flight before closing files
		b.w, b.wbuf = nil, nil
	}
	if b.cur != nil && b.cur.f != nil {
		_ = b.cur.f.Close()
		b.cur.f = nil
	}
	if b.spill != nil {
		b.spill.release()
	}
	if b.readers != nil {
		b.readers.close()
	}
}

// logPass reads the source to its end, appending records to segments and
// entries to the spill.
func (b *bulkBuilder) logPass(src BulkSource) error {
	for {
		k, v, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("marlin: bulk load: source, after %d records: %w", b.seq, err)
		}
		if err := b.checkKV(k, v); err != nil {
			return fmt.Errorf("marlin: bulk load: record %d: %w", b.seq+1, err)
		}
		if err := b.add(k, v); err != nil {
			return err
		}
		if b.seq%(1<<20) == 0 && b.bo.Progress != nil {
			b.bo.Progress(BulkProgress{Phase: "log", Records: int64(b.seq)})
		}
	}
	b.st.Records = int64(b.seq)
	if b.cur != nil {
		if err := b.seal(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bulkBuilder) checkKV(key, value []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > b.opts.MaxKeySize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), b.opts.MaxKeySize)
	case len(value) > b.opts.MaxValueSize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), b.opts.MaxValueSize)
	}
	return nil
}

// add appends one record and its spill entry.
func (b *bulkBuilder) add(k, v []byte) error {
	size := segment.Size(len(k), len(v), false)
	// Options guarantee HeaderSize + size <= SegmentSize (withDefaults).
	if b.cur == nil || b.cur.size+int64(size) > b.opts.SegmentSize {
		if b.cur != nil {
			if err := b.seal(); err != nil {
				return err
			}
		}
		if err := b.newSegment(); err != nil {
			return err
		}
	}
	if b.seq+1 > segment.MaxSeq {
		return fmt.Errorf("marlin: bulk load: more than %d records", segment.MaxSeq)
	}
	b.seq++
	sf := b.cur
	off := sf.size
	rec := segment.Record{Kind: segment.KindPut, Seq: b.seq, Key: k, Value: v}
	if b.wn+size > len(b.wbuf) {
		if err := b.flush(); err != nil {
			return err
		}
	}
	if size > len(b.wbuf) {
		// Larger than a buffer: written directly, after the writes queued
		// before it.
		if err := b.w.wait(); err != nil {
			return err
		}
		big := make([]byte, size)
		segment.Encode(big, sf.gen, off, &rec)
		if _, err := sf.f.Write(big); err != nil {
			return fmt.Errorf("marlin: bulk load: write %s at %d: %w", sf.name, off, err)
		}
	} else {
		segment.Encode(b.wbuf[b.wn:b.wn+size], sf.gen, off, &rec)
		b.wn += size
	}
	sf.size += int64(size)
	sf.live += int64(size) // less what a later record of the key replaces (indexPass)
	return b.spill.add(b.hash(k), segment.Loc(sf.id, off))
}

// newSegment creates the next segment and writes its header (into the
// write buffer, which is empty: seal flushed it).
func (b *bulkBuilder) newSegment() error {
	gen := uint64(len(b.segs)) + 1
	// Open needs an id for its active segment (it can do without, but
	// compaction then has nothing to work with): leave the reserve free,
	// as a roll of the write path would.
	if len(b.segs) >= segment.MaxSegments-idReserve {
		return fmt.Errorf("%w: the bulk load needs more than %d segments of %d bytes: use larger segments",
			ErrFull, segment.MaxSegments-idReserve, b.opts.SegmentSize)
	}
	name := filepath.Join(b.dir, segment.FileName(gen))
	f, err := b.fs.Create(name)
	if err != nil {
		return fmt.Errorf("marlin: bulk load: create segment: %w", err)
	}
	sf := &bulkSeg{id: uint16(gen - 1), gen: gen, name: name, f: f, size: segment.HeaderSize}
	b.cur = sf
	b.segs = append(b.segs, sf)
	b.wn = copy(b.wbuf, segment.EncodeHeader(segment.Header{ID: sf.id, Generation: gen, DBTag: b.meta.id.Tag()}))
	return nil
}

// flush writes the write buffer to the current segment.
func (b *bulkBuilder) flush() error {
	if b.wn == 0 {
		return nil
	}
	sf := b.cur
	err := b.w.submit(sf.f, sf.name, sf.size-int64(b.wn), b.wbuf[:b.wn])
	b.wbuf, b.wn = b.w.get(), 0
	return err
}

// seal ends the current segment as a roll of the write path does: a sync
// mark after the records (when it fits), then fsync and close. The mark
// says the records before it are fsynced, which is true once the fsync
// below succeeds; until the load is published nothing reads it.
func (b *bulkBuilder) seal() error {
	sf := b.cur
	rec := segment.Record{Kind: segment.KindSyncMark, Value: segment.EncodeSyncMark(sf.size)}
	markSize := segment.Size(0, len(rec.Value), false)
	if sf.size+int64(markSize) <= b.opts.SegmentSize {
		if b.wn+markSize > len(b.wbuf) {
			if err := b.flush(); err != nil {
				return err
			}
		}
		segment.Encode(b.wbuf[b.wn:b.wn+markSize], sf.gen, sf.size, &rec)
		b.wn += markSize
		sf.size += int64(markSize)
	}
	if err := b.flush(); err != nil {
		return err
	}
	if err := b.w.wait(); err != nil {
		return err
	}
	if err := sf.f.Sync(); err != nil {
		return fmt.Errorf("marlin: bulk load: fsync %s: %w", sf.name, err)
	}
	err := sf.f.Close()
	sf.f = nil
	b.cur = nil
	if err != nil {
		return fmt.Errorf("marlin: bulk load: close %s: %w", sf.name, err)
	}
	b.st.Segments++
	b.st.LogBytes += sf.size
	return nil
}
