package engine

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/index"
)

// counters are the engine's running totals.
type counters struct {
	puts, deletes, gets, batches, syncs, rolls atomic.Int64
	bytesWritten                               atomic.Int64 // bytes the engine wrote to files
	userBytes                                  atomic.Int64 // key+value bytes given by users
	truncated                                  atomic.Int64 // torn-tail bytes dropped at Open
	compactions, segmentsRemoved               atomic.Int64 // passes that rewrote something; segments deleted
	bytesReclaimed, bytesRewritten             atomic.Int64 // segment bytes deleted; bytes copied forward
	snapshots, snapshotNanos                   atomic.Int64 // snapshots written; duration of the last
	snapshotLoaded                             atomic.Bool  // Open used a snapshot
	replayed                                   atomic.Int64 // records replayed at Open
	openNanos                                  atomic.Int64 // duration of Open
	expired                                    atomic.Int64 // expired entries removed from the index
	records                                    atomic.Int64 // records written by users (batch operations each count)
	compactSkipped                             atomic.Int64 // damaged bytes compaction skipped
	evictions, evictedBytes                    atomic.Int64 // cache mode: keys and record bytes evicted
	segmentsEvicted, secondChances             atomic.Int64 // cache mode: segments evicted; keys copied instead
}

// SegmentStats describes one segment.
type SegmentStats struct {
	ID         uint16 // the segment id (its slot in record locations; reused after deletion)
	Generation uint64 // the segment's generation: later segments have larger ones
	Name       string // the file's path
	Size       int64  // bytes in the file (plus the unflushed tail, for the active one)
	LiveBytes  int64  // bytes of records the index points at
	DeadBytes  int64  // superseded records, tombstones and markers
	TombBytes  int64  // the part of DeadBytes that is tombstones still needed (they shadow older segments)
	Sealed     bool   // false for the active segment, which writes append to
}

// Stats is a snapshot of the DB's counters and sizes. Counters (Puts, ...)
// are totals since Open; use Sub for the activity between two snapshots.
type Stats struct {
	Keys     int64          // index entries (expired keys not yet reclaimed included)
	Segments []SegmentStats // every open segment, oldest generation first

	LiveBytes int64 // bytes of records the index points at, over all segments
	DeadBytes int64 // bytes of everything else in the segments (DeadBytes of SegmentStats, summed)
	DiskBytes int64 // segment file sizes (the unflushed tail not included)

	Index index.Stats // the index's entries, capacity and memory
	// ArenaBytes is the off-heap memory in use: the index's resident slot
	// pages and the write buffer.
	ArenaBytes int64

	Puts    int64 // single writes of a value: Put, PutTTL, an Update that sets (batch members not counted)
	Deletes int64 // single deletes that wrote a tombstone: Delete, an Update that removes (of an absent key, none is written unless cache mode needs one)
	Gets    int64 // Get, AppendValue, AppendItem, View, Has and Expiry calls
	Batches int64 // batches written (Write, and transactions that wrote)
	Syncs   int64 // fsyncs of the active segment
	Rolls   int64 // segment rolls: the active segment sealed and a new one started

	BytesWritten   int64 // by the engine, to segment files
	UserBytes      int64 // keys and values given to Put/Batch
	TruncatedBytes int64 // torn tail dropped at Open

	Compactions     int64 // compaction passes that rewrote at least one segment
	SegmentsRemoved int64 // segments deleted by compaction
	BytesReclaimed  int64 // bytes of the segments deleted
	BytesRewritten  int64 // bytes compaction copied forward (part of BytesWritten)
	// CompactionSkippedBytes counts damaged bytes compaction met (their
	// segments are skipped, not removed).
	CompactionSkippedBytes int64
	DamagedSegments        int // segments compaction skips until reopen
	AwaitingDeletion       int // compacted or evicted segments whose files wait for the next snapshot

	Snapshots          int64         // index snapshots written
	LastSnapshotTime   time.Duration // how long the last snapshot took to write
	OpenedFromSnapshot bool          // Open loaded a snapshot (else it replayed every segment)
	RecordsReplayed    int64         // records Open replayed
	OpenTime           time.Duration // how long Open took
	ExpiredReclaimed   int64         // expired keys the expirer removed from the index

	// Cache mode (Options.MaxDiskBytes).
	Evictions       int64 // keys evicted: dropped from the index with their segment
	EvictedBytes    int64 // record bytes of the keys evicted
	SegmentsEvicted int64 // segments evicted
	SecondChances   int64 // keys a read saved from eviction by a copy (EvictSecondChance)

	// Cold read path (docs/design.md, Large-data read path).
	PreadReads       int64 // records read with pread instead of through the mapping
	ColdProbesReused int64 // writes whose index probe, made before the writer mutex, was reused under it

	// Fill is the fill queue's figures (Options.Loader; zero without).
	Fill fill.Stats
}

// Stats returns current figures. It takes no lock that writers hold for
// long; figures are each consistent but not mutually atomic.
func (db *DB) Stats() (Stats, error) {
	g, err := db.enter()
	if err != nil {
		return Stats{}, err
	}
	defer db.exit(g)
	s := Stats{
		Index:          db.ix.Stats(),
		Puts:           db.st.puts.Load(),
		Deletes:        db.st.deletes.Load(),
		Gets:           db.st.gets.Load(),
		Batches:        db.st.batches.Load(),
		Syncs:          db.st.syncs.Load(),
		Rolls:          db.st.rolls.Load(),
		BytesWritten:   db.st.bytesWritten.Load(),
		UserBytes:      db.st.userBytes.Load(),
		TruncatedBytes: db.st.truncated.Load(),

		PreadReads:       db.cold.preads.Load(),
		ColdProbesReused: db.cold.reused.Load(),

		Compactions:     db.st.compactions.Load(),
		SegmentsRemoved: db.st.segmentsRemoved.Load(),
		BytesReclaimed:  db.st.bytesReclaimed.Load(),
		BytesRewritten:  db.st.bytesRewritten.Load(),

		Snapshots:          db.st.snapshots.Load(),
		LastSnapshotTime:   time.Duration(db.st.snapshotNanos.Load()),
		OpenedFromSnapshot: db.st.snapshotLoaded.Load(),
		RecordsReplayed:    db.st.replayed.Load(),
		OpenTime:           time.Duration(db.st.openNanos.Load()),
		ExpiredReclaimed:   db.st.expired.Load(),

		CompactionSkippedBytes: db.st.compactSkipped.Load(),

		Evictions:       db.st.evictions.Load(),
		EvictedBytes:    db.st.evictedBytes.Load(),
		SegmentsEvicted: db.st.segmentsEvicted.Load(),
		SecondChances:   db.st.secondChances.Load(),
	}
	s.Keys = s.Index.Entries
	s.ArenaBytes = s.Index.ResidentBytes + int64(len(db.tail.buf))
	db.mu.Lock()
	tail := db.tail.n.Load()
	active := db.active
	s.DamagedSegments = len(db.damaged)
	s.AwaitingDeletion = len(db.awaiting)
	db.mu.Unlock()
	for i := range db.segs {
		sf := db.segs[i].Load()
		if sf == nil {
			continue
		}
		ss := SegmentStats{
			ID: sf.id, Generation: sf.gen, Name: sf.name,
			Size: sf.flushed.Load(), LiveBytes: sf.live.Load(), DeadBytes: sf.dead.Load() + sf.tomb.Load(),
			TombBytes: sf.tomb.Load(),
			Sealed:    sf != active,
		}
		s.DiskBytes += ss.Size
		if sf == active {
			ss.Size += tail
		}
		s.LiveBytes += ss.LiveBytes
		s.DeadBytes += ss.DeadBytes
		s.Segments = append(s.Segments, ss)
	}
	sort.Slice(s.Segments, func(i, j int) bool { return s.Segments[i].Generation < s.Segments[j].Generation })
	if db.fill != nil {
		s.Fill = db.fill.Stats()
	}
	return s, nil
}

// Sub returns the counters of s minus those of prev (the activity between
// two snapshots); sizes and gauges are s's own.
func (s Stats) Sub(prev Stats) Stats {
	d := s
	d.Puts -= prev.Puts
	d.Deletes -= prev.Deletes
	d.Gets -= prev.Gets
	d.Batches -= prev.Batches
	d.Syncs -= prev.Syncs
	d.Rolls -= prev.Rolls
	d.BytesWritten -= prev.BytesWritten
	d.UserBytes -= prev.UserBytes
	d.TruncatedBytes -= prev.TruncatedBytes
	d.Compactions -= prev.Compactions
	d.SegmentsRemoved -= prev.SegmentsRemoved
	d.BytesReclaimed -= prev.BytesReclaimed
	d.BytesRewritten -= prev.BytesRewritten
	d.CompactionSkippedBytes -= prev.CompactionSkippedBytes
	d.Snapshots -= prev.Snapshots
	d.ExpiredReclaimed -= prev.ExpiredReclaimed
	d.PreadReads -= prev.PreadReads
	d.ColdProbesReused -= prev.ColdProbesReused
	d.Evictions -= prev.Evictions
	d.EvictedBytes -= prev.EvictedBytes
	d.SegmentsEvicted -= prev.SegmentsEvicted
	d.SecondChances -= prev.SecondChances
	d.Fill = s.Fill.Sub(prev.Fill)
	return d
}

// WriteAmplification is bytes written to disk per byte given by users.
func (s Stats) WriteAmplification() float64 {
	if s.UserBytes == 0 {
		return 0
	}
	return float64(s.BytesWritten) / float64(s.UserBytes)
}
