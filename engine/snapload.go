package engine

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/marlinkv/marlin/index"
	"github.com/marlinkv/marlin/segment"
)

// Parallel snapshot loading (issue 10): Open of 10^9 keys reads an 8 GB
// snapshot; one goroutine decoding and inserting shard after shard was
// CPU-bound (5.8 s at 10^8 keys), so the work is split.
//
//	reader (the caller)         workers (up to 2, GOMAXPROCS bound)
//	frame after frame:          per frame: checksum, runs in order,
//	  one pread of the head,      every location inside the snapshot's
//	  one of the payload          segments, index.LoadShard per run
//	  (up to 4 MiB, sequential)
//	      --- full buffers -->
//	      <-- free buffers ---
//
// Frames hold whole shard runs, so workers own disjoint shards and need no
// coordination beyond the index's per-shard locks (LoadShard) and the slab
// allocator's mutex. Shards must ascend over the whole file: each worker
// records the first and last shard of each frame it decoded, and the reader
// checks the frames' ranges in file order once all are done. Any error
// stops the load; the caller then resets the index (a failed load leaves
// it partly filled, as before).
//
// Buffers: snapLoadBuffers payload buffers circulate between the reader and
// the workers; a buffer belongs to the reader until sent, to one worker
// until it sends it back. A worker's slot buffer is its own.

// snapLoadBuffers is the number of frame buffers in flight: enough for each
// worker to have one while the reader fills the next ones.
const snapLoadBuffers = 4

// snapFrame is one entry frame handed to a worker.
type snapFrame struct {
	seq int    // position among the entry frames
	off int64  // file offset of the frame, for error messages
	sum uint32 // the checksum its header records
	buf []byte // the payload
}

// frameRange is the first and last shard of a decoded frame (-1: empty).
type frameRange struct{ first, last int }

// loadEntries loads the entry frames of snap into the empty index and
// returns how many entries they held. Errors do not name the file (the
// caller adds it). sizes maps a segment id to its size
// in the snapshot's segment table (0: not listed).
func (db *DB) loadEntries(snap *snapFile, sizes *[segment.MaxSegments]int64) (uint64, error) {
	workers := min(2, runtime.GOMAXPROCS(0))
	free := make(chan []byte, snapLoadBuffers)
	for range snapLoadBuffers {
		free <- nil // allocated on first use, at the size needed
	}
	work := make(chan snapFrame, snapLoadBuffers)
	var (
		loaded  atomic.Uint64
		failed  atomic.Bool
		errMu   sync.Mutex
		firstEr error
		rangeMu sync.Mutex
		ranges  []frameRange
	)
	fail := func(err error) {
		errMu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		errMu.Unlock()
		failed.Store(true)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var slots []uint64
			for fr := range work {
				if !failed.Load() {
					r, n, err := db.loadFrame(fr, sizes, &slots)
					if err != nil {
						fail(err)
					} else {
						loaded.Add(n)
						rangeMu.Lock()
						for len(ranges) <= fr.seq {
							ranges = append(ranges, frameRange{-1, -1})
						}
						ranges[fr.seq] = r
						rangeMu.Unlock()
					}
				}
				free <- fr.buf
			}
		}()
	}

	var head [8]byte
	seq := 0
	for off := snap.entriesAt; off < snap.trailerAt && !failed.Load(); seq++ {
		if _, err := snap.f.ReadAt(head[:], off); err != nil {
			fail(err)
			break
		}
		n := int64(binary.LittleEndian.Uint32(head[:]))
		if n > snapFrameMax || off+8+n > snap.trailerAt {
			fail(fmt.Errorf("frame at %d: bad length %d", off, n))
			break
		}
		buf := <-free
		if int64(cap(buf)) < n {
			buf = make([]byte, n, max(n, snapFrameFlush+snapFrameFlush/4))
		}
		buf = buf[:n]
		if _, err := snap.f.ReadAt(buf, off+8); err != nil {
			free <- buf
			fail(err)
			break
		}
		work <- snapFrame{seq: seq, off: off, sum: binary.LittleEndian.Uint32(head[4:]), buf: buf}
		off += 8 + n
	}
	close(work)
	wg.Wait()
	if failed.Load() {
		return 0, firstEr
	}
	prev := -1
	for i, r := range ranges {
		if r.first < 0 {
			continue
		}
		if r.first <= prev {
			return 0, fmt.Errorf("entry frame %d: shard %d after shard %d", i, r.first, prev)
		}
		prev = r.last
	}
	return loaded.Load(), nil
}

// loadFrame checks one entry frame and loads its shard runs into the
// index. It returns the frame's shard range and entry count. *slots is the
// worker's decode buffer.
func (db *DB) loadFrame(fr snapFrame, sizes *[segment.MaxSegments]int64, slots *[]uint64) (frameRange, uint64, error) {
	r := frameRange{-1, -1}
	p := fr.buf
	if crc32.Checksum(p, castagnoli) != fr.sum {
		return r, 0, fmt.Errorf("frame at %d: checksum mismatch", fr.off)
	}
	var loaded uint64
	for len(p) > 0 {
		if len(p) < 8 {
			return r, 0, fmt.Errorf("frame at %d: truncated shard run", fr.off)
		}
		sn, n := int(binary.LittleEndian.Uint32(p)), int(binary.LittleEndian.Uint32(p[4:]))
		if sn <= r.last || sn >= index.NumShards || n > (len(p)-8)/8 {
			return r, 0, fmt.Errorf("frame at %d: bad shard run (shard %d, %d slots)", fr.off, sn, n)
		}
		if r.first < 0 {
			r.first = sn
		}
		r.last = sn
		if cap(*slots) < n {
			*slots = make([]uint64, n, max(n, 4096))
		}
		s := (*slots)[:n]
		for i := range s {
			v := binary.LittleEndian.Uint64(p[8+8*i:])
			id, off := segment.SplitLoc(v & index.LocMask)
			if int(id) >= len(sizes) || off < segment.HeaderSize || off >= sizes[id] {
				return r, 0, fmt.Errorf("shard %d: location %#x outside the snapshot's segments", sn, v&index.LocMask)
			}
			s[i] = v
		}
		if err := db.ix.LoadShard(sn, s); err != nil {
			return r, 0, err
		}
		loaded += uint64(n)
		p = p[8+8*n:]
	}
	return r, loaded, nil
}
