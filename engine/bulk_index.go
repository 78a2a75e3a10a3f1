package engine

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/marlinkv/marlin/arena"
	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// The index pass: partitions are processed two at a time (one worker per
// core), then their winners are appended to the snapshot in partition
// order. A partition covers NumShards/parts consecutive shards, and its
// entries sorted by hash are sorted by (shard, fingerprint), the order
// LoadShard and the snapshot format want.

// bulkWorker sorts and reduces one partition at a time. Its sort buffer is
// off-heap and owned by the worker until close; after process, out (which
// aliases the buffer) holds the partition's slots until the next process.
type bulkWorker struct {
	b    *bulkBuilder
	mem  []byte
	ents []spillEntry
	out  []uint64 // winners' slot values, in hash order
	// shardN[i] is the number of winners in the partition's i-th shard.
	shardN   []int
	dropped  []int64 // bytes of replaced records per segment id
	keyReads int64
	rbuf     []byte
	group    []uint64 // locations of the winners of one group, newest first
}

func newBulkWorker(b *bulkBuilder, shardsPerPart int) *bulkWorker {
	return &bulkWorker{b: b, shardN: make([]int, shardsPerPart), dropped: make([]int64, segment.MaxSegments)}
}

// grow makes the sort buffer hold n entries.
func (w *bulkWorker) grow(n int) error {
	if n <= len(w.ents) {
		return nil
	}
	if w.mem != nil {
		if err := arena.Unmap(w.mem); err != nil {
			return fmt.Errorf("marlin: bulk load: %w", err)
		}
		w.mem, w.ents = nil, nil
	}
	n = max(n, len(w.ents)*5/4, spillBlockEntries)
	mem, err := arena.Map(n * spillEntrySize)
	if err != nil {
		return fmt.Errorf("marlin: bulk load: sort buffer for %d entries: %w", n, err)
	}
	w.mem = mem
	w.ents = unsafe.Slice((*spillEntry)(unsafe.Pointer(unsafe.SliceData(mem))), n)
	return nil
}

func (w *bulkWorker) close() {
	if w.mem != nil {
		_ = arena.Unmap(w.mem)
		w.mem, w.ents = nil, nil
	}
}

func cmpEntry(a, b spillEntry) int {
	if c := cmp.Compare(a.h, b.h); c != 0 {
		return c
	}
	return cmp.Compare(a.loc, b.loc)
}

// process loads partition p, sorts it and keeps, for each key, its last
// record (the highest location: input order). Entries with equal hashes
// are told apart by reading their keys.
func (w *bulkWorker) process(p int) error {
	sp := w.b.spill
	n := int(sp.count[p])
	clear(w.shardN)
	w.out = nil
	if n == 0 {
		return nil
	}
	if err := w.grow(n); err != nil {
		return err
	}
	ents := w.ents[:n]
	if err := sp.read(p, ents); err != nil {
		return err
	}
	slices.SortFunc(ents, cmpEntry)
	// Winners are written over the entries as single words: the j-th
	// winner goes to word j, and a group's winners are written only after
	// the whole group was read, while every later entry lies at word 2i
	// >= 2j or beyond.
	out := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(ents))), 2*n)
	firstShard := p * len(w.shardN)
	j := 0
	for i := 0; i < n; {
		h := ents[i].h
		e := i + 1
		for e < n && ents[e].h == h {
			e++
		}
		w.group = w.group[:0]
		if e-i == 1 {
			w.group = append(w.group, ents[i].loc)
		} else if err := w.reduce(ents[i:e]); err != nil {
			return err
		}
		sn, fp := index.Split(h)
		// Equal fingerprints keep location order (LoadShard accepts any
		// order among them); write oldest first like the sort.
		for k := len(w.group) - 1; k >= 0; k-- {
			out[j] = index.Slot(fp, w.group[k])
			j++
			w.shardN[sn-firstShard]++
		}
		i = e
	}
	w.out = out[:j]
	return nil
}

// reduce appends to w.group the location of the last record of each
// distinct key among g (entries with one stored hash, in location order),
// newest first, and takes the records it drops (replaced by a later one of
// the same key) off their segment's live bytes.
func (w *bulkWorker) reduce(g []spillEntry) error {
	seen := make(map[string]bool, 2)
	for k := len(g) - 1; k >= 0; k-- {
		key, size, err := w.readKey(g[k].loc)
		if err != nil {
			return err
		}
		if seen[string(key)] {
			id, _ := segment.SplitLoc(g[k].loc)
			w.dropped[id] += int64(size)
			continue
		}
		seen[string(key)] = true
		w.group = append(w.group, g[k].loc)
	}
	return nil
}

// readKey reads back the record at loc (checking its checksum) and
// returns its key and size. The first read runs to the end of the
// record's 4 KiB block (bounded by the segment's end); a longer record is
// sized from its header and read whole.
func (w *bulkWorker) readKey(loc uint64) ([]byte, int, error) {
	id, off := segment.SplitLoc(loc)
	sf := w.b.segs[id]
	f, err := w.b.readers.get(sf)
	if err != nil {
		return nil, 0, err
	}
	n := min((off/preadChunk+1)*preadChunk, sf.size) - off
	if n < segment.MaxHeader {
		n = min(n+preadChunk, sf.size-off)
	}
	buf, err := w.readFull(f, sf, int(n), off)
	if err != nil {
		return nil, 0, err
	}
	if size, ok := segment.PeekSize(buf, segment.FormatLimits); ok && size > len(buf) && off+int64(size) <= sf.size {
		if buf, err = w.readFull(f, sf, size, off); err != nil {
			return nil, 0, err
		}
	}
	w.keyReads++
	r, size, err := segment.Decode(buf, sf.gen, off, segment.FormatLimits)
	if err != nil {
		return nil, 0, segment.WithFile(err, sf.name)
	}
	return r.Key, size, nil
}

// readFull reads n bytes at off of sf into w.rbuf.
func (w *bulkWorker) readFull(f vfs.File, sf *bulkSeg, n int, off int64) ([]byte, error) {
	if cap(w.rbuf) < n {
		w.rbuf = make([]byte, n)
	}
	buf := w.rbuf[:n]
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("marlin: bulk load: read %s at %d: %w", sf.name, off, err)
	}
	return buf, nil
}

// segReaders opens the finished segments for reading on demand.
type segReaders struct {
	fs    vfs.FS
	mu    sync.Mutex // guards files
	files map[uint16]vfs.File
}

func (r *segReaders) get(sf *bulkSeg) (vfs.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.files[sf.id]; f != nil {
		return f, nil
	}
	f, err := r.fs.Open(sf.name)
	if err != nil {
		return nil, fmt.Errorf("marlin: bulk load: %w", err)
	}
	r.files[sf.id] = f
	return f, nil
}

func (r *segReaders) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		_ = f.Close()
		delete(r.files, id)
	}
}

// indexPass builds the index snapshot from the spill.
func (b *bulkBuilder) indexPass() error {
	b.readers = &segReaders{fs: b.fs, files: map[uint16]vfs.File{}}
	nparts := b.spill.parts()
	per := index.NumShards / nparts
	workers := [2]*bulkWorker{newBulkWorker(b, per), newBulkWorker(b, per)}
	defer workers[0].close()
	defer workers[1].close()

	name := filepath.Join(b.dir, snapName(1))
	f, err := b.fs.Create(name)
	if err != nil {
		return fmt.Errorf("marlin: bulk load: create %s: %w", name, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	fw := &frameWriter{f: f}
	fw.frame(snapHeader(time.Now().UnixMilli(), b.meta.id))
	var entries uint64
	for p := 0; p < nparts; p += 2 {
		for _, n := range b.spill.count[p:min(p+2, nparts)] {
			b.st.MaxPartitionEntries = max(b.st.MaxPartitionEntries, n)
		}
		var wg sync.WaitGroup
		var err2 error
		if p+1 < nparts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err2 = workers[1].process(p + 1)
			}()
		}
		err := workers[0].process(p)
		wg.Wait()
		if err == nil {
			err = err2
		}
		if err != nil {
			return err
		}
		for k, wk := range workers {
			if p+k >= nparts {
				break
			}
			at := 0
			for i, c := range wk.shardN {
				if c > 0 {
					fw.shard((p+k)*per+i, wk.out[at:at+c])
					at += c
				}
			}
			entries += uint64(len(wk.out))
		}
		if fw.err != nil {
			return fmt.Errorf("marlin: bulk load: write %s at %d: %w", name, fw.off, fw.err)
		}
		if b.bo.Progress != nil {
			b.bo.Progress(BulkProgress{Phase: "index", Records: b.st.Records, PartsDone: min(p+2, nparts), Parts: nparts})
		}
	}
	fw.flushEntries()
	b.st.Keys = int64(entries)
	for _, wk := range workers {
		b.st.KeyReads += wk.keyReads
		for id, n := range wk.dropped {
			if n != 0 {
				b.segs[id].live -= n
			}
		}
	}
	last := b.segs[len(b.segs)-1]
	meta := snapMeta{
		entries: entries,
		replay:  logPos{last.gen, last.size},
		acct:    logPos{last.gen, last.size},
		nextSeq: b.seq + 1,
		nextGen: last.gen + 1,
	}
	for _, s := range b.segs {
		meta.segs = append(meta.segs, snapSeg{id: s.id, gen: s.gen, size: s.size, live: s.live})
	}
	trailerAt := fw.off
	fw.frame(meta.encode())
	var foot [snapFooterSize]byte
	binary.LittleEndian.PutUint64(foot[:], uint64(trailerAt))
	copy(foot[8:], snapEndMagic)
	if fw.err == nil {
		_, fw.err = f.Write(foot[:])
	}
	if fw.err != nil {
		return fmt.Errorf("marlin: bulk load: write %s at %d: %w", name, fw.off, fw.err)
	}
	b.st.SnapshotBytes = fw.off + snapFooterSize
	if err := f.Sync(); err != nil {
		return fmt.Errorf("marlin: bulk load: fsync %s: %w", name, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("marlin: bulk load: close %s: %w", name, err)
	}
	return nil
}
