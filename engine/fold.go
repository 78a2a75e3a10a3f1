package engine

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/segment"
)

// FoldOptions configure Fold. The zero value (or nil) is the default.
type FoldOptions struct {
	// Path is the new base bundle's file. Default: base-<16 hex>.bundle in
	// the database directory, which the DB deletes once a later fold
	// replaces it. A file elsewhere (to share with other processes) is
	// never deleted by the DB.
	Path string
	// MemoryLimit bounds the builder's memory (bundle.BuildOptions); the
	// rest is sorted externally, in TempDir ("": beside Path).
	MemoryLimit int64
	TempDir     string
	// ValueFormat tags the new bundle's values (bundle.ValuesPlain or
	// bundle.ValuesItems, for a database marlin serve writes). Zero: the
	// current base's format (plain without a base).
	ValueFormat uint8
	// Cancel, when closed, stops the fold before the switch; nothing
	// changes and the partial bundle is removed.
	Cancel <-chan struct{}
	// Skip, if set, leaves out of the new base the pairs it returns true
	// for (a server's items that a flush_all hides but its sweep has not
	// removed yet). Such a key then reads as absent only if the delta
	// holds it too; use it for pairs that must not come back.
	Skip func(key, value []byte, it Item) bool
	// Convert, if set, gives the value the new base stores for a pair
	// (appended to dst, a buffer the fold reuses; value is valid only
	// during the call): a server turns the plain values of an old base
	// into its items.
	Convert func(dst, key, value []byte, it Item) []byte
	// Started, if set, is called with the builder before the first pair
	// is added, so that the caller can poll its Progress from another
	// goroutine (a progress display).
	Started func(b *bundle.Builder)
}

// FoldStats say what a fold or a base switch did.
type FoldStats struct {
	Path    string            // the new base bundle
	Pairs   int64             // pairs in the new base
	Dropped int64             // delta entries dropped because the new base gives the same answer
	Build   bundle.BuildStats // the bundle builder's figures (Fold only)
	Elapsed time.Duration     // the whole fold or switch
}

// Fold rebuilds the base: it writes the merged view (base plus delta,
// without the pairs that have a TTL, which stay in the delta) to a new
// bundle, makes it the base (the BASE file replaced by rename, the old
// mapping released once the reads in flight finish), and drops from the
// delta what the new base now holds. It works without a base too: the
// delta becomes the first base. Reads and writes go on meanwhile; a
// write during the fold stays in the delta (every delete made during it
// is a mask, see base.go). A crash at any point leaves the old base and
// the delta, or the new base and the delta, each pair consistent.
func (db *DB) Fold(o *FoldOptions) (st FoldStats, err error) {
	start := time.Now()
	if o == nil {
		o = &FoldOptions{}
	}
	done, err := db.startSwitch()
	if err != nil {
		return st, err
	}
	defer done()
	endFolding := db.raiseFolding()
	defer endFolding()
	db.mu.Lock()
	seq := db.nextSeq
	db.mu.Unlock()

	st.Path = o.Path
	if st.Path == "" {
		st.Path = filepath.Join(db.dir, db.foldName(seq))
	}
	if cur := db.base.Load(); cur != nil && samePath(cur.path, st.Path) {
		return st, fmt.Errorf("%w: the fold's output %s is the current base", ErrBadOptions, st.Path)
	}
	vf := o.ValueFormat
	if cur := db.base.Load(); vf == 0 && cur != nil {
		vf = cur.r.Info().ValueFormat
	}
	b, err := bundle.NewBuilder(db.fs, st.Path, &bundle.BuildOptions{
		MemoryLimit: o.MemoryLimit, TempDir: o.TempDir, Cancel: o.Cancel, ValueFormat: vf})
	if err != nil {
		return st, fmt.Errorf("marlin: fold: %w", err)
	}
	if o.Started != nil {
		o.Started(b)
	}
	if err := db.foldInto(b, o); err != nil {
		_ = b.Abort()
		return st, err
	}
	if err := b.Finish(); err != nil {
		return st, fmt.Errorf("marlin: fold: %w", err)
	}
	st.Build = b.Stats()
	st.Pairs = st.Build.Entries
	if err := db.switchBase(st.Path); err != nil {
		return st, err
	}
	endFolding()
	st.Dropped, err = db.dropFolded()
	st.Elapsed = time.Since(start)
	return st, err
}

// foldInto adds the merged view's pairs without TTL to b, but those
// o.Skip rejects.
func (db *DB) foldInto(b *bundle.Builder, o *FoldOptions) error {
	it := db.NewIterator()
	defer it.Close()
	var buf []byte
	for n := 0; it.Next(); n++ {
		if n%4096 == 0 {
			if db.stopping() {
				return ErrClosed
			}
			select {
			case <-o.Cancel:
				return fmt.Errorf("marlin: fold: %w", bundle.ErrCanceled)
			default:
			}
		}
		if !it.Item().Expiry.IsZero() {
			continue // a TTL stays in the delta: a bundle has none
		}
		if o.Skip != nil && o.Skip(it.Key(), it.Value(), it.Item()) {
			continue
		}
		v := it.Value()
		if o.Convert != nil {
			buf = o.Convert(buf[:0], it.Key(), v, it.Item())
			v = buf
		}
		if err := b.Add(it.Key(), v); err != nil {
			return fmt.Errorf("marlin: fold: %w", err)
		}
		if db.foldAddHook != nil {
			db.foldAddHook()
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("marlin: fold: reading the database: %w", err)
	}
	return nil
}

// SetBase makes the bundle at path the base, as Fold's switch does, and
// drops from the delta what it now holds. The delta keeps overriding it:
// puts, and deletes of keys the old base held (their masks stay while the
// new base has the key too). A bundle that is not a fold of this database
// should be an export at least as new as the delta's oldest write: a key
// deleted in the delta while the old base did not hold it reappears if
// the new base has it.
func (db *DB) SetBase(path string) (st FoldStats, err error) {
	start := time.Now()
	done, err := db.startSwitch()
	if err != nil {
		return st, err
	}
	defer done()
	if cur := db.base.Load(); cur != nil && samePath(cur.path, path) {
		return st, nil
	}
	// Deletes during the switch are masks: the new base may hold the key.
	endFolding := db.raiseFolding()
	err = db.switchBase(path)
	endFolding()
	if err != nil {
		return st, err
	}
	st.Path = path
	st.Pairs = int64(db.base.Load().r.Len())
	st.Dropped, err = db.dropFolded()
	st.Elapsed = time.Since(start)
	return st, err
}

// startSwitch begins a fold or a base switch: it refuses a read-only or
// closed handle, registers as background work (Close waits for it) and
// takes db.foldMu. done undoes both.
func (db *DB) startSwitch() (done func(), err error) {
	if db.opts.ReadOnly {
		return nil, ErrReadOnly
	}
	if err := db.startBg(); err != nil {
		return nil, err
	}
	db.foldMu.Lock()
	return func() {
		db.foldMu.Unlock()
		db.bg.Done()
	}, nil
}

// raiseFolding makes every delete a mask until the returned function
// (idempotent) is called.
func (db *DB) raiseFolding() (lower func()) {
	db.mu.Lock()
	db.folding++
	db.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			db.mu.Lock()
			db.folding--
			db.mu.Unlock()
		})
	}
}

func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// switchBase opens the bundle at path, records it in the BASE file
// (durably, by rename) and makes it the base; the old one is released
// once every operation that may be reading it has finished, and deleted
// if a fold made it. db.foldMu must be held, and db.folding non-zero.
func (db *DB) switchBase(path string) error {
	name, err := baseName(db.dir, path)
	if err != nil {
		return err
	}
	// The new base's pairs are older than every write after the switch:
	// they get the next sequence number, taken (under db.mu) so that no
	// write has it.
	db.mu.Lock()
	seq := db.nextSeq
	db.nextSeq++
	db.mu.Unlock()
	nb, err := db.openBase(path, name, seq)
	if err != nil {
		return err
	}
	if err := writeBase(db.fs, db.dir, baseRecord{name: name, seq: seq}); err != nil {
		nb.remove = false // an owned file is removed at the next Open
		nb.release()
		return err
	}
	db.mu.Lock()
	old := db.base.Swap(nb)
	db.mu.Unlock()
	db.guard.synchronize() // no lookup reads old's mapping after this
	if old != nil {
		old.release() // iterators walking it hold references of their own
	}
	return nil
}

// dropFolded takes out of the delta the entries the base now answers the
// same way: a put without TTL whose value the base holds, and an expired
// put (a mask) of a key the base lacks. Each gets a tombstone, since its
// record stays in its segment until compaction (which then drops both
// once nothing older remains), so the key does not come back at the next
// Open. It walks the
// sealed segments and the flushed part of the active one; it returns the
// entries dropped.
func (db *DB) dropFolded() (int64, error) {
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	db.mu.Lock()
	// The walk reads flushed records only: flush the tail first, so
	// writes made before the switch are seen.
	if db.failed == nil && db.active != nil {
		if err := db.flushLocked(); err != nil {
			db.mu.Unlock()
			return 0, err
		}
	}
	var segs []*segFile
	for i := range db.segs {
		if sf := db.segs[i].Load(); sf != nil {
			segs = append(segs, sf)
		}
	}
	db.mu.Unlock()
	slices.SortFunc(segs, func(a, b *segFile) int { return cmp.Compare(a.gen, b.gen) })
	var dropped int64
	for _, sf := range segs {
		_, err := db.walkSegment(sf, 0, func(e *segment.Entry, now int64) error {
			n, err := db.dropFoldedLocked(sf, e, now)
			dropped += n
			return err
		})
		if err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// dropFoldedLocked applies dropFolded's rule to one record of sf. db.mu
// must be held.
func (db *DB) dropFoldedLocked(sf *segFile, e *segment.Entry, now int64) (int64, error) {
	r := &e.Rec
	if r.Kind != segment.KindPut {
		return 0, nil
	}
	loc := segment.Loc(sf.id, e.Off)
	h := db.hash(r.Key)
	if !db.ix.Lookup(h, func(l uint64) bool { return l == loc }) {
		return 0, nil // superseded
	}
	expired := r.Expiry != 0 && r.Expiry <= now
	switch {
	case expired && db.needsMaskLocked(r.Key):
		return 0, nil
	case !expired && (r.Expiry != 0 || db.folding > 0 || !db.sameAsBase(r.Key, r.Value)):
		return 0, nil
	}
	if !db.ix.DeleteExact(h, loc) {
		return 0, nil
	}
	sf.live.Add(-int64(e.Size))
	sf.dead.Add(int64(e.Size))
	// Unlike compaction's, this record stays on disk: a tombstone must
	// shadow it (and older versions), or the next Open brings it back.
	if !db.hasKeyLocked(h, r.Key) {
		if err := db.reappendLocked(segment.KindDelete, h, r.Key, tombValue(sf.gen), 0, 0, sf.gen); err != nil {
			return 1, err
		}
	}
	return 1, nil
}

// BaseInfo describes the base layer.
type BaseInfo struct {
	Path        string    // the bundle's file ("" and the rest zero: no base)
	Pairs       int64     // pairs in the bundle
	Bytes       int64     // the bundle's size
	ValueFormat uint8     // bundle.ValuesPlain or bundle.ValuesItems
	Built       time.Time // when the bundle was built
	Seq         uint64    // its pairs' sequence number (Item.Seq)
}

// Base describes the current base (a zero BaseInfo if there is none).
func (db *DB) Base() BaseInfo {
	b := db.base.Load()
	if b == nil {
		return BaseInfo{}
	}
	in := b.r.Info()
	return BaseInfo{Path: b.path, Pairs: in.Count, Bytes: in.FileSize, ValueFormat: in.ValueFormat, Built: in.Built, Seq: b.seq}
}

// foldName names a fold's output in the directory: base-<n in hex>.bundle
// with n the next sequence number, or one past the current fold-made
// base's n if that is not smaller (two folds without a write between).
func (db *DB) foldName(seq uint64) string {
	if cur := db.base.Load(); cur != nil && ownedBase(cur.name) {
		hex := strings.TrimSuffix(strings.TrimPrefix(cur.name, baseOwnedPre), baseOwnedExt)
		if n, err := strconv.ParseUint(hex, 16, 64); err == nil && n >= seq {
			seq = n + 1
		}
	}
	return fmt.Sprintf("%s%016x%s", baseOwnedPre, seq, baseOwnedExt)
}
