package engine

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"path/filepath"
	"time"

	"github.com/dchest/siphash"
	"github.com/marlinkv/marlin/internal/testhooks"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// The identity file MARLIN names a database and holds its secret hash key
// (see docs/format.md, "The identity file", and docs/design.md, "Identity
// and hash seed"). It is written once, when the database is created, before
// any segment exists, and never changes afterwards:
//
//	+0   magic       [8]byte "MARLINDB"
//	+8   version     uint16  metaVersion
//	+10  hash        uint16  hash function id: 1 = SipHash-2-4 keyed with key
//	+12  reserved    uint32  zero
//	+16  id          [16]byte random database id; its first 4 bytes (as a
//	                         little-endian uint32, never 0) are the db tag
//	                         in every segment header
//	+32  key         [16]byte random SipHash key (k0, k1 little-endian)
//	+48  created     int64   creation time, Unix ms (informational)
//	+56  segSize     uint32  SegmentSize at creation (informational only:
//	                         nothing reads data with it)
//	+60  crc         uint32  CRC-32C of bytes [0, 60)
//
// Invariant: a directory that holds a segment file holds a valid MARLIN
// file, because Open writes MARLIN (temp file, fsync, rename, fsync dir)
// before it creates the first segment. So segments without it are damage
// (or a foreign copy), never a state Marlin left, and Open refuses them
// rather than invent a new identity: the key decides where every key's
// fingerprint lives, and the id is what ties segments and snapshots to the
// database.

// MetaFileName is the database identity file.
const MetaFileName = "MARLIN"

const (
	metaTmpName = "MARLIN.tmp"
	metaSize    = 64
	metaMagic   = "MARLINDB"
	metaVersion = 1
	// hashSipHash24 is the only hash function id: SipHash-2-4 with the
	// database's key.
	hashSipHash24 = 1
)

// DBID is a database's random 16-byte identity.
type DBID [16]byte

// String returns the id in hex.
func (id DBID) String() string { return hex.EncodeToString(id[:]) }

// Tag is the 32-bit database tag written into segment headers: the first
// 4 bytes of the id, little-endian. newMeta never creates an id whose tag
// is 0 (0 would mean "no tag").
func (id DBID) Tag() uint32 { return binary.LittleEndian.Uint32(id[:4]) }

// dbMeta is the decoded identity file.
type dbMeta struct {
	id       DBID
	hashFn   uint16
	key      [16]byte
	created  int64 // Unix ms
	segSize  uint32
	fromDisk bool // read from (or written to) the directory
}

// hashFunc returns the keyed key hash this database's index uses.
func (m *dbMeta) hashFunc() func([]byte) uint64 {
	k0 := binary.LittleEndian.Uint64(m.key[:8])
	k1 := binary.LittleEndian.Uint64(m.key[8:])
	return func(b []byte) uint64 { return siphash.Hash(k0, k1, b) }
}

// newMeta returns a fresh identity with a random id (with a non-zero tag)
// and a random hash key.
func newMeta(created time.Time, segSize int64) (*dbMeta, error) {
	m := &dbMeta{hashFn: hashSipHash24, created: created.UnixMilli(), segSize: uint32(segSize)}
	src := rand.Reader
	if testhooks.IdentityRand != nil {
		src = testhooks.IdentityRand
	}
	for m.id.Tag() == 0 {
		if _, err := io.ReadFull(src, m.id[:]); err != nil {
			return nil, fmt.Errorf("marlin: random database id: %w", err)
		}
	}
	if _, err := io.ReadFull(src, m.key[:]); err != nil {
		return nil, fmt.Errorf("marlin: random hash key: %w", err)
	}
	return m, nil
}

func (m *dbMeta) encode() []byte {
	b := make([]byte, metaSize)
	copy(b, metaMagic)
	binary.LittleEndian.PutUint16(b[8:], metaVersion)
	binary.LittleEndian.PutUint16(b[10:], m.hashFn)
	copy(b[16:], m.id[:])
	copy(b[32:], m.key[:])
	binary.LittleEndian.PutUint64(b[48:], uint64(m.created))
	binary.LittleEndian.PutUint32(b[56:], m.segSize)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	return b
}

// decodeMeta checks and decodes an identity file's bytes. The error says
// what is wrong, without the file name.
func decodeMeta(b []byte) (*dbMeta, error) {
	if len(b) != metaSize {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), metaSize)
	}
	if string(b[:8]) != metaMagic {
		return nil, fmt.Errorf("bad magic %q", b[:8])
	}
	if got, want := crc32.Checksum(b[:60], castagnoli), binary.LittleEndian.Uint32(b[60:]); got != want {
		return nil, fmt.Errorf("checksum mismatch (stored %#08x, computed %#08x)", want, got)
	}
	m := &dbMeta{fromDisk: true}
	if v := binary.LittleEndian.Uint16(b[8:]); v != metaVersion {
		return nil, fmt.Errorf("unsupported version %d (this Marlin reads version %d)", v, metaVersion)
	}
	if m.hashFn = binary.LittleEndian.Uint16(b[10:]); m.hashFn != hashSipHash24 {
		return nil, fmt.Errorf("unknown hash function %d", m.hashFn)
	}
	copy(m.id[:], b[16:32])
	copy(m.key[:], b[32:48])
	if m.id.Tag() == 0 {
		return nil, fmt.Errorf("database id has a zero tag")
	}
	m.created = int64(binary.LittleEndian.Uint64(b[48:]))
	m.segSize = binary.LittleEndian.Uint32(b[56:])
	return m, nil
}

// readMeta reads dir's identity file. A missing file is reported with an
// error wrapping fs.ErrNotExist; a damaged one with ErrCorrupt.
func readMeta(fs vfs.FS, dir string) (*dbMeta, error) {
	name := filepath.Join(dir, MetaFileName)
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	size, err := f.Size()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("marlin: stat %s: %w", name, err)
	}
	// Read one byte more than the format's size, so a longer file is seen.
	b := make([]byte, min(size, metaSize+1))
	if _, err := f.ReadAt(b, 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("marlin: read %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("marlin: close %s: %w", name, err)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("%w: database identity file %s is damaged (%v); it holds the hash key every index "+
			"entry depends on: restore it from a backup or checkpoint of this database (a copy of the directory has the same file)",
			ErrCorrupt, name, err)
	}
	return m, nil
}

// writeMeta writes m as dir's identity file durably.
func writeMeta(fs vfs.FS, dir string, m *dbMeta) error {
	return writeSmallFile(fs, dir, metaTmpName, MetaFileName, m.encode())
}

// writeSmallFile writes data as dir's file name durably: to tmp, fsynced,
// renamed over name, and the directory fsynced. A failure removes tmp.
func writeSmallFile(fs vfs.FS, dir, tmp, name string, data []byte) error {
	tmpPath := filepath.Join(dir, tmp)
	f, err := fs.Create(tmpPath)
	if err != nil {
		return fmt.Errorf("marlin: create %s: %w", tmpPath, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmpPath, filepath.Join(dir, name))
	}
	if err == nil {
		err = fs.SyncDir(dir)
	}
	if err != nil {
		_ = fs.Remove(tmpPath)
		return fmt.Errorf("marlin: write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// loadIdentity reads the database's identity, creating it for a new
// database, and sets the key hash. names is the directory listing. It runs
// before anything else in the directory is read or changed.
func (db *DB) loadIdentity(names []string) error {
	m, err := readMeta(db.fs, db.dir)
	if err == nil {
		if !db.opts.ReadOnly {
			if err := db.removeMetaTmp(names); err != nil {
				return err
			}
		}
		return db.setIdentity(m)
	}
	if !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	for _, n := range names {
		if _, ok := segment.ParseFileName(n); ok {
			return fmt.Errorf("%w: %s holds segment files but no database identity file %s: "+
				"it holds the hash key every index entry depends on, so a new one cannot be made up; "+
				"restore it from a backup or checkpoint of this database",
				ErrCorrupt, db.dir, MetaFileName)
		}
	}
	// A new database (or one whose creation crashed before its first
	// segment): any identity will do, and nothing refers to one yet.
	m, err = newMeta(time.Now(), db.opts.SegmentSize)
	if err != nil {
		return err
	}
	if db.opts.ReadOnly {
		// Nothing on disk to read with it; a read-only open changes nothing.
		return db.setIdentity(m)
	}
	// writeMeta's Create truncates a MARLIN.tmp left by a crashed
	// creation, and its rename consumes it.
	if err := writeMeta(db.fs, db.dir, m); err != nil {
		return err
	}
	m.fromDisk = true
	return db.setIdentity(m)
}

// removeMetaTmp removes a stray MARLIN.tmp beside a valid MARLIN (a
// creation leaves none once its rename is durable, but a copy or a crash of
// another tool might).
func (db *DB) removeMetaTmp(names []string) error {
	for _, n := range names {
		if n == metaTmpName {
			if err := db.fs.Remove(filepath.Join(db.dir, n)); err != nil {
				return fmt.Errorf("marlin: %w", err)
			}
		}
	}
	return nil
}

func (db *DB) setIdentity(m *dbMeta) error {
	db.meta = m
	db.hash = m.hashFunc()
	if db.opts.hash != nil {
		db.hash = db.opts.hash // tests force collisions
	}
	return nil
}

// ID returns the database's identity, from its MARLIN file. (A read-only
// open of an empty directory has a random id that is not stored anywhere.)
func (db *DB) ID() DBID { return db.meta.id }

// isForeignSegment reports whether a decoded header belongs to another
// database.
func (db *DB) isForeignSegment(h segment.Header) bool { return h.DBTag != db.meta.id.Tag() }
