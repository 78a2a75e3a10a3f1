package engine

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	iofs "io/fs"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// Two layers: a read-only base bundle under the live database (the delta).
// docs/design.md, "Base and delta", has the whole story; the rules the
// code keeps are these.
//
//   - Reads look in the delta first. Any index entry for the key decides:
//     a put that has not expired is the value; an expired put is absence,
//     and the base is not consulted. Only a key with no index entry falls
//     through to the base.
//   - A mask is a put with expiry maskExpiry and an empty value: the
//     delete of a key that needsMaskLocked says the base may show. Deletes
//     of other keys write ordinary tombstones, which occupy no index
//     entry.
//   - An expired put (a mask, or a TTL that ran out) stays indexed while
//     needsMaskLocked holds for its key: the expirer, compaction, eviction
//     and replay keep it (compaction shrinks it to a mask), because taking
//     it out would bring the base's value back.
//   - needsMaskLocked holds while the base has the key, and for every key
//     while a fold is in progress: a fold reads the merged view while
//     writes go on, so a key it copied may be deleted afterwards, and only
//     a mask hides the copy once the new base is in place.
//   - Dropping a delta entry is always safe when the base gives the same
//     answer: a put without expiry whose value the base holds, or an
//     expired put of a key the base lacks (dropFoldedLocked). Dropping
//     writes a tombstone when older records of the key may remain, as
//     compaction does for expired puts.
//   - The BASE file names the base; it is replaced by rename after the new
//     bundle is durable, so a crash leaves the old pair or the new one,
//     both consistent: a fold drops nothing before the switch.

// BaseFileName is the file in a database directory naming its base bundle.
const BaseFileName = "BASE"

const (
	baseTmpName  = "BASE.tmp"
	baseMagic    = "marlin-base 1"
	baseOwnedPre = "base-" // folds name their bundles base-<16 hex>.bundle
	baseOwnedExt = ".bundle"
)

// maskExpiry is a mask's expiry: 1 ms after the epoch, long past, so every
// read path treats a mask as an expired put (absent) without knowing
// masks exist.
const maskExpiry = 1

// baseLayer is an open base bundle. refs counts the DB's reference (while
// it is the current base) and each iterator walking it; the reader is
// closed when the count reaches zero, or at Close.
type baseLayer struct {
	r      *bundle.Reader
	path   string // the path it was opened at
	name   string // as the BASE file records it: relative to the directory when inside it
	seq    uint64 // the sequence number of its pairs: the DB's next one when it was switched to
	refs   atomic.Int64
	remove bool // the DB made the file (a fold's output): delete it once unused
	fs     vfs.FS
}

func (b *baseLayer) acquire() { b.refs.Add(1) }

func (b *baseLayer) release() {
	if b.refs.Add(-1) != 0 {
		return
	}
	_ = b.r.Close()
	if b.remove {
		_ = b.fs.Remove(b.path)
	}
}

// baseRecord is what a BASE file records.
type baseRecord struct {
	name string // the bundle: relative to the directory, or absolute
	seq  uint64 // the sequence number of its pairs
}

// encodeBase returns the BASE file of r: the magic line, the name, the
// sequence number in decimal and the CRC-32C of the lines before it, in
// hex (docs/format.md).
func encodeBase(r baseRecord) []byte {
	body := fmt.Sprintf("%s\n%s\n%d\n", baseMagic, r.name, r.seq)
	return fmt.Appendf([]byte(body), "%08x\n", crc32.Checksum([]byte(body), crcTable))
}

// decodeBase parses a BASE file.
func decodeBase(b []byte) (baseRecord, error) {
	lines := strings.Split(string(b), "\n")
	if len(lines) != 5 || lines[4] != "" || lines[0] != baseMagic || lines[1] == "" {
		return baseRecord{}, errors.New("not a BASE file (want the magic line, a file name, a sequence number and a checksum)")
	}
	body := strings.Join(lines[:3], "\n") + "\n"
	if want := fmt.Sprintf("%08x", crc32.Checksum([]byte(body), crcTable)); lines[3] != want {
		return baseRecord{}, fmt.Errorf("checksum %s, want %s", lines[3], want)
	}
	seq, err := strconv.ParseUint(lines[2], 10, 64)
	if err != nil || seq == 0 {
		return baseRecord{}, fmt.Errorf("bad sequence number %q", lines[2])
	}
	return baseRecord{name: lines[1], seq: seq}, nil
}

// readBase returns what dir's BASE file records (a zero record if there
// is none).
func readBase(fs vfs.FS, dir string) (baseRecord, error) {
	var none baseRecord
	path := filepath.Join(dir, BaseFileName)
	f, err := fs.Open(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return none, nil
	}
	if err != nil {
		return none, fmt.Errorf("marlin: open %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return none, fmt.Errorf("marlin: stat %s: %w", path, err)
	}
	if size > 64<<10 {
		return none, fmt.Errorf("%w: %s: %d bytes, too large for a BASE file", ErrCorrupt, path, size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return none, fmt.Errorf("marlin: read %s: %w", path, err)
	}
	r, err := decodeBase(b)
	if err != nil {
		return none, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return r, nil
}

// writeBase makes dir's BASE file record r, durably: temp file, fsync,
// rename, fsync of the directory.
func writeBase(fs vfs.FS, dir string, r baseRecord) error {
	return writeSmallFile(fs, dir, baseTmpName, BaseFileName, encodeBase(r))
}

// baseName is how the BASE file of dir records path: relative to dir when
// the file lies in it (so the directory can be moved or copied whole),
// absolute otherwise.
func baseName(dir, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("marlin: base %s: %w", path, err)
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("marlin: %s: %w", dir, err)
	}
	if rel, err := filepath.Rel(absDir, abs); err == nil && !strings.HasPrefix(rel, "..") && !strings.ContainsRune(rel, filepath.Separator) {
		return rel, nil
	}
	return abs, nil
}

// basePath resolves a name from the BASE file against dir.
func basePath(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

// ownedBase reports whether name (as BASE records it) is a bundle a fold
// made in the directory, which the DB deletes once it is replaced.
func ownedBase(name string) bool {
	if filepath.IsAbs(name) || !strings.HasPrefix(name, baseOwnedPre) || !strings.HasSuffix(name, baseOwnedExt) {
		return false
	}
	hex := strings.TrimSuffix(strings.TrimPrefix(name, baseOwnedPre), baseOwnedExt)
	if len(hex) != 16 {
		return false
	}
	_, err := strconv.ParseUint(hex, 16, 64)
	return err == nil
}

// openBase opens the bundle at path as a base whose pairs have sequence
// number seq.
func (db *DB) openBase(path, name string, seq uint64) (*baseLayer, error) {
	r, err := bundle.Open(db.fs, path, nil)
	if errors.Is(err, bundle.ErrCorrupt) {
		return nil, fmt.Errorf("%w: base bundle %s: %v", ErrCorrupt, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("marlin: base bundle: %w", err)
	}
	if r.Approximate() {
		_ = r.Close()
		return nil, fmt.Errorf("%w: base bundle %s is approximate (it stores no keys, so absent keys would read as present)", ErrBadOptions, path)
	}
	b := &baseLayer{r: r, path: path, name: name, seq: seq, fs: db.fs, remove: ownedBase(name)}
	b.refs.Store(1)
	return b, nil
}

// loadBase opens the base at Open (before replay, which needs it): the
// one the BASE file names, or Options.Base, which a new BASE file then
// records (recordBase, after replay: its sequence number is the log's
// next). If both are given they must name the same file: switching to
// another base is SetBase's or Fold's job, since the delta may already
// have dropped what the current base holds. names is the listing of the
// directory.
func (db *DB) loadBase(names []string) error {
	rec, err := readBase(db.fs, db.dir)
	if err != nil {
		return err
	}
	recorded := rec.name
	if !db.opts.ReadOnly {
		for _, n := range names {
			if n == baseTmpName {
				if err := db.fs.Remove(filepath.Join(db.dir, n)); err != nil && !errors.Is(err, iofs.ErrNotExist) {
					return fmt.Errorf("marlin: remove %s: %w", n, err)
				}
			}
		}
	}
	want := db.opts.Base
	switch {
	case recorded == "" && want == "":
		return nil
	case recorded != "" && want != "":
		a, _ := filepath.Abs(basePath(db.dir, recorded))
		b, _ := filepath.Abs(want)
		if a != b {
			return fmt.Errorf("%w: the database's base is %s (its %s file), not %s; switch bases with DB.SetBase or DB.Fold (marlin bundle build DIR), or open without a base option",
				ErrBadOptions, a, BaseFileName, b)
		}
	}
	name := recorded
	if name == "" {
		if name, err = baseName(db.dir, want); err != nil {
			return err
		}
	}
	layer, err := db.openBase(basePath(db.dir, name), name, rec.seq)
	if err != nil {
		return err
	}
	layer.remove = layer.remove && !db.opts.ReadOnly
	db.base.Store(layer)
	if !db.opts.ReadOnly {
		db.removeStaleBases(names, name)
	}
	return nil
}

// recordBase writes the BASE file for a base given by Options.Base that
// no BASE file records yet, once replay has found the log's next sequence
// number, which becomes the base's. A read-only Open writes nothing and
// uses that number in memory.
func (db *DB) recordBase() error {
	b := db.base.Load()
	if b != nil && b.seq >= db.nextSeq {
		db.nextSeq = b.seq + 1 // no write after the switch reached it yet
	}
	if b == nil || b.seq != 0 {
		return nil
	}
	b.seq = db.nextSeq
	db.nextSeq++ // the base's number is no write's
	if db.opts.ReadOnly {
		return nil
	}
	return writeBase(db.fs, db.dir, baseRecord{name: b.name, seq: b.seq})
}

// removeStaleBases deletes the fold outputs in the directory that the BASE
// file does not name: left by a crash between a switch and the deletion
// of the old base, or by a fold that failed after its bundle was written.
func (db *DB) removeStaleBases(names []string, current string) {
	for _, n := range names {
		if ownedBase(n) && n != current {
			_ = db.fs.Remove(filepath.Join(db.dir, n))
		}
	}
}

// baseHas reports whether the current base holds key. A read error counts
// as yes: the caller then keeps a mask, which is never wrong, only larger.
func (db *DB) baseHas(key []byte) bool {
	b := db.base.Load()
	if b == nil {
		return false
	}
	ok, err := b.r.Has(key)
	return ok || err != nil
}

// needsMaskLocked reports whether key's absence in the delta must be an
// index entry (a mask or an expired put) rather than nothing: while a fold
// runs, or when the base may show the key. db.mu must be held (a fold
// starts and switches bases under it).
func (db *DB) needsMaskLocked(key []byte) bool {
	return db.folding > 0 || db.baseHas(key)
}

// baseLookup returns key's record from the base, as a put with the
// base's sequence number and no expiry whose value points into the
// bundle's mapping
// (valid while the caller is inside an operation: a replaced base is
// closed only after those in flight finish).
func (db *DB) baseLookup(key []byte) (segment.Record, error) {
	b := db.base.Load()
	if b == nil {
		return segment.Record{}, ErrNotFound
	}
	v, err := b.r.Get(key)
	switch {
	case err == nil:
		return segment.Record{Kind: segment.KindPut, Seq: b.seq, Key: key, Value: v}, nil
	case errors.Is(err, bundle.ErrNotFound):
		return segment.Record{}, ErrNotFound
	case errors.Is(err, bundle.ErrCorrupt):
		return segment.Record{}, fmt.Errorf("%w: base bundle %s: %v", ErrCorrupt, b.path, err)
	}
	return segment.Record{}, fmt.Errorf("%w: base bundle %s: %v", ErrIO, b.path, err)
}

// sameAsBase reports whether the base holds key with exactly value.
func (db *DB) sameAsBase(key, value []byte) bool {
	b := db.base.Load()
	if b == nil {
		return false
	}
	v, err := b.r.Get(key)
	return err == nil && bytes.Equal(v, value)
}

// maskBatchLocked returns b with its deletes of keys that need masks
// turned into masks (a copy of b's operations if any is; b itself is the
// caller's and stays as it is), and total grown by the masks' sizes
// (a batch's planned total leaves deletes out). db.mu must be held.
func (db *DB) maskBatchLocked(b *Batch, total int) (*Batch, int) {
	if db.base.Load() == nil && db.folding == 0 {
		return b, total
	}
	var out *Batch
	for i := range b.ops {
		op := &b.ops[i]
		if op.kind != segment.KindDelete || !db.needsMaskLocked(b.key(op)) {
			continue
		}
		if out == nil {
			out = &Batch{ops: append([]batchOp(nil), b.ops...), data: b.data}
		}
		m := &out.ops[i]
		m.kind, m.expiry, m.vlen, m.ttl = segment.KindPut, maskExpiry, 0, 0
		total += segment.Size(m.klen, 0, true)
	}
	if out == nil {
		return b, total
	}
	return out, total
}

// remaskLocked replaces key's indexed record at oldLoc (of oldSize bytes,
// expired or evicted) with a mask: the key stays absent and keeps hiding
// the base's value, in the fewest bytes. db.mu must be held.
func (db *DB) remaskLocked(h uint64, key []byte, oldLoc uint64, oldSize int) error {
	return db.reappendSizedLocked(segment.KindPut, h, key, nil, maskExpiry, oldLoc, oldSize, 0)
}

// baseGet is Tx.Get of a key the delta does not hold: the base's value,
// copied (a fault reading the mapping is an ErrIO error).
func (tx *Tx) baseGet(key []byte) (value []byte, it Item, found bool, err error) {
	value, it, found, err = tx.db.baseCopy(key)
	return value, it, found, err
}

// baseRef is an iterator's reference to a base layer, released once
// (by the end of the walk, or by the cleanup of a dropped iterator).
type baseRef struct {
	b    *baseLayer
	once sync.Once
}

func newBaseRef(b *baseLayer) *baseRef {
	b.acquire()
	return &baseRef{b: b}
}

func (r *baseRef) release() { r.once.Do(r.b.release) }

// nextBase advances the iterator through the base's pairs, skipping those
// whose key has an index entry: a live put there was yielded from the log,
// and an expired one hides the key. A damaged pair ends the walk, or is
// reported and skipped with SkipCorrupt.
func (it *Iterator) nextBase() bool {
	db, r := it.db, it.base.b.r
	for it.bi < r.Len() {
		i := it.bi
		it.bi++
		k, v, err := r.Pair(i)
		if err != nil {
			kind := ErrCorrupt
			if !errors.Is(err, bundle.ErrCorrupt) {
				kind = ErrIO // a read fault of the mapping
			}
			err = fmt.Errorf("%w: base bundle %s, pair %d: %v", kind, it.base.b.path, i, err)
			if !it.opts.SkipCorrupt {
				return it.stop(err)
			}
			it.skipRecord(it.base.b.path, int64(i), err)
			continue
		}
		if db.deltaHolds(k) {
			continue
		}
		it.key, it.value, it.item = k, v, Item{Seq: it.base.b.seq, Base: true}
		return true
	}
	return it.stop(nil)
}

// deltaHolds reports whether the index has an entry for key (expired or
// not), without a lock, as lookup reads it. An unreadable candidate counts
// as the key: the walk then leaves the base's pair out rather than show a
// key that may be deleted.
func (db *DB) deltaHolds(key []byte) bool {
	return db.ix.Lookup(db.hash(key), func(loc uint64) bool {
		r, hd, err := db.readRecord(loc)
		if err != nil {
			return !errors.Is(err, errStale)
		}
		eq := r.Kind == segment.KindPut && bytes.Equal(r.Key, key)
		db.unhold(hd)
		return eq
	})
}

// baseCopy returns a copy of the base's value for key, its version, and
// whether it has one; a fault reading the mapping is an ErrIO error.
func (db *DB) baseCopy(key []byte) (value []byte, it Item, found bool, err error) {
	defer db.catchFault(debug.SetPanicOnFault(true), &err)
	rec, err := db.baseLookup(key)
	if errors.Is(err, ErrNotFound) {
		return nil, it, false, nil
	}
	if err != nil {
		return nil, it, false, err
	}
	return append([]byte(nil), rec.Value...), Item{Seq: rec.Seq, Base: true}, true, nil
}

// checkpointBase gives a checkpoint in dir the database's base: a bundle
// in the database directory is linked (or copied) beside the segments, one
// elsewhere is named by its absolute path. db.foldMu must be held.
func (db *DB) checkpointBase(dir string, copyFiles bool, res *CheckpointResult) error {
	b := db.base.Load()
	if b == nil {
		return nil
	}
	rec := baseRecord{name: b.name, seq: b.seq}
	if filepath.IsAbs(b.name) {
		return writeBase(db.fs, dir, rec)
	}
	dst := filepath.Join(dir, b.name)
	linked := false
	if !copyFiles {
		linked = db.fs.Link(b.path, dst) == nil
	}
	if linked {
		res.Linked++
	} else {
		fi, err := db.fs.Stat(b.path)
		if err != nil {
			return err
		}
		if err := db.copyFile(b.path, dst, fi.Size()); err != nil {
			return err
		}
		res.Copied++
	}
	return writeBase(db.fs, dir, rec)
}
