package bundle

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"runtime/debug"

	"github.com/marlinkv/marlin/vfs"
)

// Verify reads the whole file and checks everything Open does not: the
// CRC-32C of the data, entry and fence sections; the zero padding before
// the entries; every entry's record (in the data section, in order, each
// starting where the previous one ended, its CRC, and in exact mode its
// key's hash equal to the entry's); the entries sorted by hash; the key
// and value byte counts of the footer; the fences equal to those the
// entries imply; and no two entries with equal hashes that a lookup could
// not tell apart (equal keys in exact mode, equal checks in approximate
// mode). It returns the first problem found, wrapping ErrCorrupt, or an
// ErrIO error if the file cannot be read.
func (r *Reader) Verify() (err error) {
	if r.closed.Load() {
		return ErrClosed
	}
	_ = r.mp.Advise(vfs.AccessSequential)
	defer func() { _ = r.mp.Advise(vfs.AccessRandom) }()
	defer r.catchFault(debug.SetPanicOnFault(true), &err)
	f := r.f
	sections := []struct {
		name string
		b    []byte
		want uint32
	}{
		{"data", r.data, f.dataCRC},
		{"entry", r.ents, f.entriesCRC},
		{"fence", r.fences, f.fencesCRC},
	}
	for _, s := range sections {
		if got := crc32.Checksum(s.b, castagnoli); got != s.want {
			return r.corrupt("%s section checksum %#08x, footer says %#08x", s.name, got, s.want)
		}
	}
	for i, c := range r.m[dataOff+f.dataLen : f.entriesOff] {
		if c != 0 {
			return r.corrupt("padding byte at offset %d is %#x, want 0", dataOff+f.dataLen+uint64(i), c)
		}
	}
	if err := r.verifyEntries(); err != nil {
		return err
	}
	return r.verifyFences()
}

// verifyEntries walks the entries in order.
func (r *Reader) verifyEntries() error {
	var keyBytes, valueBytes, next uint64
	var prevH uint64
	groupStart := 0 // first entry with hash prevH
	for i := range r.n {
		e := r.ents[i*entrySize:]
		h := binary.LittleEndian.Uint64(e)
		off := binary.LittleEndian.Uint64(e[8:]) & offMask
		if i > 0 && h < prevH {
			return r.corrupt("entry %d: hash %#016x below the previous entry's %#016x (not sorted)", i, h, prevH)
		}
		if off != next {
			return r.corrupt("entry %d: record at %d, the previous one ended at %d", i, off, next)
		}
		key, value, err := r.pairAt(i)
		if err != nil {
			return err
		}
		if !r.f.approximate() && hashKey(key, r.f.seed) != h {
			return r.corrupt("entry %d: its key does not hash to its hash", i)
		}
		if i == 0 || h != prevH {
			groupStart = i
		}
		for j := groupStart; j < i; j++ {
			if err := r.distinct(j, i, key); err != nil {
				return err
			}
		}
		keyBytes += uint64(len(key))
		valueBytes += uint64(len(value))
		next = off + uint64(len(key)+len(value)+recCRCSize)
		prevH = h
	}
	switch {
	case next != uint64(len(r.data)):
		return r.corrupt("the records end at %d, the data section at %d", next, len(r.data))
	case keyBytes != r.f.keyBytes || valueBytes != r.f.valueBytes:
		return r.corrupt("the records hold %d key and %d value bytes, the footer says %d and %d",
			keyBytes, valueBytes, r.f.keyBytes, r.f.valueBytes)
	}
	return nil
}

// distinct checks that entry j (earlier, same hash) can be told apart from
// entry i, whose key (exact mode) is key.
func (r *Reader) distinct(j, i int, key []byte) error {
	if r.f.approximate() {
		if r.ents[j*entrySize+14] == r.ents[i*entrySize+14] && r.ents[j*entrySize+15] == r.ents[i*entrySize+15] {
			return r.corrupt("entries %d and %d have the same hash and check", j, i)
		}
		return nil
	}
	kj, _, err := r.pairAt(j)
	if err != nil {
		return err
	}
	if bytes.Equal(kj, key) {
		return r.corrupt("entries %d and %d hold the same key", j, i)
	}
	return nil
}

// verifyFences checks every fence against the entries.
func (r *Reader) verifyFences() error {
	b := 0
	check := func(b, i int) error {
		if got := binary.LittleEndian.Uint64(r.fences[b*fenceSize:]); got != uint64(i) {
			return r.corrupt("fence %d is %d, the entries put it at %d", b, got, i)
		}
		return nil
	}
	for i := range r.n {
		bucket := int(hashAt(r.ents, i) >> (64 - r.k))
		for ; b <= bucket; b++ {
			if err := check(b, i); err != nil {
				return err
			}
		}
	}
	for ; b < int(r.f.fenceCount()); b++ {
		if err := check(b, r.n); err != nil {
			return err
		}
	}
	return nil
}
