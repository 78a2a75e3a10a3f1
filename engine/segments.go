package engine

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"path/filepath"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// freeIDLocked returns the lowest unused segment id.
func (db *DB) freeIDLocked() (uint16, error) {
	for i := range db.segs {
		if db.segs[i].Load() == nil && !db.retiring[i] {
			return uint16(i), nil
		}
	}
	return 0, ErrFull
}

// createSegmentLocked creates, syncs and maps a new empty segment and makes
// it visible in db.segs. The header and the directory entry are fsynced
// before any record can refer to the file.
func (db *DB) createSegmentLocked() (*segFile, error) {
	return db.createSegmentSizedLocked(db.opts.SegmentSize)
}

// createSegmentSizedLocked is createSegmentLocked for a segment whose
// mapping covers mapLen bytes: more than SegmentSize only for a record
// that does not fit a segment of this open's size (see placeLocked).
func (db *DB) createSegmentSizedLocked(mapLen int64) (*segFile, error) {
	id, err := db.freeIDLocked()
	if err != nil {
		return nil, err
	}
	gen := db.nextGen
	name := filepath.Join(db.dir, segment.FileName(gen))
	f, err := db.fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("marlin: create segment: %w", err)
	}
	sf := &segFile{id: id, gen: gen, name: name, f: f}
	fail := func(err error) (*segFile, error) {
		_ = sf.close()
		// Make the removal durable: a half-created segment that came back
		// after a crash would stand after the active one's unsynced tail.
		if rerr := db.fs.Remove(name); rerr == nil {
			_ = db.fs.SyncDir(db.dir)
		}
		return nil, fmt.Errorf("marlin: create segment %s: %w", name, err)
	}
	if _, err := f.Write(segment.EncodeHeader(segment.Header{ID: id, Generation: gen, DBTag: db.meta.id.Tag()})); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := db.fs.SyncDir(db.dir); err != nil {
		return fail(err)
	}
	if sf.m, err = f.Map(int(max(mapLen, db.opts.SegmentSize))); err != nil {
		return fail(err)
	}
	db.nextGen++
	sf.data = sf.m.Bytes()
	sf.flushed.Store(segment.HeaderSize)
	sf.durable.Store(segment.HeaderSize)
	sf.marked = segment.HeaderSize
	db.st.bytesWritten.Add(segment.HeaderSize)
	db.segs[id].Store(sf)
	return sf, nil
}

// rollLocked seals the active segment (flush, fsync) and starts a new one.
func (db *DB) rollLocked() error { return db.rollSizedLocked(db.opts.SegmentSize) }

// rollSizedLocked is rollLocked with a new segment mapped for mapLen bytes
// (see createSegmentSizedLocked).
func (db *DB) rollSizedLocked(mapLen int64) error {
	if err := db.syncActiveLocked(); err != nil {
		return err
	}
	// Seal with a sync mark, so that damage anywhere in a sealed segment is
	// reported as corruption even if it ends up last with records.
	if db.tail.start+int64(segment.Size(0, 10, false)) <= db.opts.SegmentSize {
		db.markLocked(0)
		if err := db.syncActiveLocked(); err != nil {
			return err
		}
	}
	sf, err := db.createSegmentSizedLocked(mapLen)
	if err != nil {
		// The old segment is still active and intact; later writes retry.
		return err
	}
	db.tailMu.Lock()
	old := db.active
	db.active = sf
	db.tail.start = segment.HeaderSize
	db.tail.n.Store(0)
	db.tailMu.Unlock()
	if old != nil {
		old.sealed.Store(true)
	}
	db.st.rolls.Add(1)
	db.kickCompactor()
	return nil
}

// mkdirDurable creates dir and any missing parents and fsyncs the parent of
// each directory it created: a new directory's entry is durable only once
// its parent is synced (DESIGN-NOTES rule 2), and everything in a new
// database or checkpoint directory depends on it.
func mkdirDurable(fs vfs.FS, dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		_, err := fs.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range created {
		if err := fs.SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
