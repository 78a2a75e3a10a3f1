package bundle

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/vfs"
)

// Finish writes the bundle and puts it under its name. The pairs are
// sorted by hash (merging the runs on disk, if the memory limit was
// reached), duplicates resolved (the last added wins, or ErrDuplicateKey
// with Strict), and the file written in one sequential pass to a
// temporary name beside the final one, fsynced, renamed, and the directory
// fsynced. On any error no file is left under the final name (an existing
// one is untouched) and the temporary files are removed.
func (b *Builder) Finish() error {
	switch {
	case b.err != nil:
		return b.err
	case b.done:
		return ErrClosed
	}
	b.done = true
	if err := b.finish(); err != nil {
		return b.fail(err)
	}
	b.cleanup()
	b.phase.Store(phaseDone)
	b.stats.Elapsed = time.Since(b.started)
	return nil
}

// outBuf is the output writer's buffer.
const outBuf = 1 << 20

func (b *Builder) finish() error {
	b.added.Store(b.nAdded)
	b.stats.Added = b.nAdded
	var src interface {
		next() (uint64, []byte, []byte, bool, error)
	}
	sinkCap := 0
	stable := false // whether src's slices outlive the next call
	if len(b.runs) == 0 {
		src = &memSource{rb: b.buf} // sorts each partition as it comes to it
		sinkCap = b.limit - b.buf.touched() - outBuf
		stable = true
	} else {
		if b.buf.n > 0 {
			if err := b.spill(); err != nil {
				return err
			}
		}
		b.buf.release()
		b.buf = nil
		m, err := b.mergeRuns()
		if err != nil {
			return err
		}
		defer m.close()
		src = m
		sinkCap = b.limit/2 - outBuf
	}
	b.phase.Store(phaseWriting)
	w, err := b.newWriter(sinkCap)
	if err != nil {
		return err
	}
	defer w.release()
	for i := 0; ; i++ {
		if i&4095 == 0 && b.canceled() {
			return ErrCanceled
		}
		h, key, value, ok, err := src.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := w.add(h, key, value, stable); err != nil {
			return err
		}
	}
	return w.finish()
}

// mergeRuns merges the runs, in passes of at most fanIn runs while there
// are more, and returns a merger over the last ones. The read buffers
// share half the memory limit; the other half holds the entry sink.
func (b *Builder) mergeRuns() (*merger, error) {
	b.phase.Store(phaseMerging)
	const minBuf, maxBuf = 16 << 10, 1 << 20
	fanIn := max(2, min(256, b.limit/2/minBuf))
	onRead := func(n int) { b.stats.ScratchRead += int64(n) }
	for len(b.runs) > fanIn {
		var next []*runFile
		for i := 0; i < len(b.runs); i += fanIn {
			group := b.runs[i:min(i+fanIn, len(b.runs))]
			if len(group) == 1 {
				next = append(next, group[0])
				continue
			}
			run, err := b.mergeGroup(group, max(minBuf, min(maxBuf, b.limit/2/len(group))), onRead)
			if err != nil {
				return nil, err // cleanup removes every scratch file
			}
			next = append(next, run)
		}
		b.runs = next
		b.stats.MergePasses++
	}
	return newMerger(b.fs, b.runs, max(minBuf, min(maxBuf, b.limit/2/len(b.runs))), onRead)
}

// mergeGroup merges consecutive runs into one new run (keeping every
// record: duplicates are resolved by the last merge only) and removes
// them.
func (b *Builder) mergeGroup(group []*runFile, bufSize int, onRead func(int)) (*runFile, error) {
	m, err := newMerger(b.fs, group, bufSize, onRead)
	if err != nil {
		return nil, err
	}
	defer m.close()
	run, err := b.writeRun(func(rw *runWriter) error {
		for i := 0; ; i++ {
			if i&4095 == 0 && b.canceled() {
				return ErrCanceled
			}
			h, key, value, ok, err := m.next()
			if err != nil || !ok {
				return err
			}
			if err := rw.add(h, key, value); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for _, r := range group {
		b.removeTemp(r.name)
	}
	return run, nil
}

// writer writes the output file: the prefix and the data section as pairs
// arrive (in hash order), the entries into a sink; then the padding, the
// entries (computing the fences into a second sink), the fences, the
// footer.
type writer struct {
	b     *Builder
	f     vfs.File // the temporary output; owned until finish or release
	out   *bufio.Writer
	foot  footer
	data  uint64 // data bytes written
	dcrc  uint32 // data section CRC so far
	ents  *sink
	group []pending // pairs with the hash of the last one, not yet written
	ebuf  [entrySize]byte
	crcb  [recCRCSize]byte
}

// pending is a pair held until the next pair shows whether its hash
// repeats. Its key and value are copies it owns (owned), or slices of a
// stable source.
type pending struct {
	h          uint64
	key, value []byte
	owned      bool
}

func (b *Builder) newWriter(sinkCap int) (*writer, error) {
	ents, err := b.newSink(sinkCap)
	if err != nil {
		return nil, err
	}
	f, err := b.fs.Create(b.tmpPath)
	if err != nil {
		ents.release()
		return nil, err
	}
	w := &writer{b: b, f: f, out: bufio.NewWriterSize(f, outBuf), ents: ents}
	w.foot = footer{mode: modeExact, hashFn: hashFarm64, seed: b.seed, builtMs: time.Now().UnixMilli(), valueFmt: b.o.ValueFormat}
	if b.o.Approximate {
		w.foot.mode, w.foot.checkSeed = modeApproximate, deriveCheckSeed(b.seed)
	}
	if _, err := w.out.Write(encodePrefix()); err != nil {
		w.release()
		return nil, err
	}
	return w, nil
}

// add takes the next pair in hash order (equal hashes in the order
// added). A pair whose key is already in the group of its hash replaces
// that one's value (or fails with Strict). With stable, key and value
// stay valid until the pair is written and are not copied.
func (w *writer) add(h uint64, key, value []byte, stable bool) error {
	if len(w.group) > 0 && w.group[0].h != h {
		if err := w.flushGroup(); err != nil {
			return err
		}
	}
	for i := range w.group {
		if bytes.Equal(w.group[i].key, key) {
			if w.b.o.Strict {
				return fmt.Errorf("%w: %q", ErrDuplicateKey, clip(key))
			}
			w.group[i].setValue(value, stable)
			w.b.stats.Duplicates++
			return nil
		}
	}
	if n := len(w.group); n < cap(w.group) {
		w.group = w.group[:n+1]
	} else {
		w.group = append(w.group, pending{})
	}
	p := &w.group[len(w.group)-1]
	p.h = h
	if stable {
		p.key, p.value, p.owned = key, value, false
		return nil
	}
	if !p.owned {
		p.key, p.value, p.owned = nil, nil, true
	}
	p.key = append(p.key[:0], key...)
	p.value = append(p.value[:0], value...)
	return nil
}

// setValue replaces the pair's value (a source is stable or not for a
// whole build, so an owned pair gets a copy).
func (p *pending) setValue(value []byte, stable bool) {
	if stable {
		p.value = value
		return
	}
	p.value = append(p.value[:0], value...)
}

// clip shortens a key for an error message.
func clip(k []byte) []byte {
	if len(k) > 64 {
		return k[:64]
	}
	return k
}

// flushGroup writes the pending pairs (distinct keys with one hash).
func (w *writer) flushGroup() error {
	if w.foot.approximate() {
		for i := range w.group {
			for j := range i {
				if checkOf(w.group[i].key, w.foot.checkSeed) == checkOf(w.group[j].key, w.foot.checkSeed) {
					return fmt.Errorf("%w: %q and %q (build again: a new seed is drawn)",
						ErrIndistinguishable, clip(w.group[j].key), clip(w.group[i].key))
				}
			}
		}
	}
	for i := range w.group {
		p := &w.group[i]
		if err := w.emit(p.h, p.key, p.value); err != nil {
			return err
		}
		if !p.owned || cap(p.value) > 1<<20 { // keep only small buffers of our own
			p.key, p.value, p.owned = nil, nil, false
		}
	}
	w.group = w.group[:0]
	return nil
}

// emit writes one record and its entry.
func (w *writer) emit(h uint64, key, value []byte) error {
	var aux uint16
	if w.foot.approximate() {
		aux = checkOf(key, w.foot.checkSeed)
		key = nil
	} else {
		aux = uint16(len(key))
	}
	size := uint64(len(key) + len(value) + recCRCSize)
	if w.data+size >= MaxDataBytes || w.foot.count >= MaxCount {
		return fmt.Errorf("%w: more than %d data bytes or %d pairs", ErrTooLarge, uint64(MaxDataBytes), uint64(MaxCount))
	}
	if err := w.writeRecord(h, aux, key, value, int(size)); err != nil {
		return err
	}
	putEntry(w.ebuf[:], h, w.data, aux)
	if err := w.ents.write(w.ebuf[:]); err != nil {
		return err
	}
	w.data += size
	w.foot.count++
	w.foot.keyBytes += uint64(len(key))
	w.foot.valueBytes += uint64(len(value))
	if w.foot.count&4095 == 0 {
		w.b.written.Store(int64(w.foot.count))
	}
	return nil
}

// writeRecord writes key, value and the record's CRC into the output,
// adding them to the data section's CRC. A record that fits the output
// buffer is assembled in it, so each CRC runs once over the whole record.
func (w *writer) writeRecord(h uint64, aux uint16, key, value []byte, size int) error {
	if size <= w.out.Size() {
		if w.out.Available() < size {
			if err := w.out.Flush(); err != nil {
				return err
			}
		}
		buf := append(append(w.out.AvailableBuffer(), key...), value...)
		buf = binary.LittleEndian.AppendUint32(buf, recordCRC(h, aux, buf, nil))
		w.dcrc = crc32.Update(w.dcrc, castagnoli, buf)
		_, err := w.out.Write(buf) // the bytes are in place: Write only counts them
		return err
	}
	binary.LittleEndian.PutUint32(w.crcb[:], recordCRC(h, aux, key, value))
	for _, p := range [][]byte{key, value, w.crcb[:]} {
		w.dcrc = crc32.Update(w.dcrc, castagnoli, p)
		if _, err := w.out.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// finish writes the sections after the data and the footer, and publishes
// the file.
func (w *writer) finish() error {
	if err := w.flushGroup(); err != nil {
		return err
	}
	f := &w.foot
	f.layout() // data length, entry offset, fence bits, file size
	f.dataCRC = w.dcrc
	if pad := f.entriesOff - dataOff - f.dataLen; pad > 0 {
		if _, err := w.out.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	fences, err := w.b.newSink(int(min(uint64(w.b.limit/2), fenceSize*f.fenceCount())))
	if err != nil {
		return err
	}
	defer fences.release()
	// The entries, and the fences they imply: fence b is the index of the
	// first entry whose hash's top k bits are >= b.
	var i, nextB uint64
	var fb [fenceSize]byte
	fence := func(upTo, idx uint64) error {
		for ; nextB <= upTo; nextB++ {
			binary.LittleEndian.PutUint64(fb[:], idx)
			if err := fences.write(fb[:]); err != nil {
				return err
			}
		}
		return nil
	}
	k := uint(f.fenceBits)
	err = w.ents.replay(func(chunk []byte) error {
		f.entriesCRC = crc32.Update(f.entriesCRC, castagnoli, chunk)
		for off := 0; off < len(chunk); off += entrySize {
			if err := fence(binary.LittleEndian.Uint64(chunk[off:])>>(64-k), i); err != nil {
				return err
			}
			i++
		}
		_, err := w.out.Write(chunk)
		return err
	})
	if err != nil {
		return err
	}
	if err := fence(1<<k, f.count); err != nil {
		return err
	}
	err = fences.replay(func(chunk []byte) error {
		f.fencesCRC = crc32.Update(f.fencesCRC, castagnoli, chunk)
		_, err := w.out.Write(chunk)
		return err
	})
	if err != nil {
		return err
	}
	if _, err := w.out.Write(f.encode()); err != nil {
		return err
	}
	return w.publish()
}

// publish flushes, fsyncs and closes the temporary file, renames it to the
// final name and fsyncs the directory.
func (w *writer) publish() error {
	if err := w.out.Flush(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return err
	}
	b := w.b
	if err := b.fs.Rename(b.tmpPath, b.path); err != nil {
		return err
	}
	b.published = true
	b.written.Store(int64(w.foot.count))
	b.stats.Entries = int64(w.foot.count)
	b.stats.FileSize = int64(w.foot.fileSize)
	if err := b.fs.SyncDir(filepath.Dir(b.path)); err != nil {
		return fmt.Errorf("%s is complete, but syncing its directory failed (the rename may not survive a crash): %w", b.path, err)
	}
	return nil
}

// release closes the output if publish did not, and frees the entry sink.
// The temporary file itself is removed by the Builder's cleanup.
func (w *writer) release() {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.ents.release()
}
