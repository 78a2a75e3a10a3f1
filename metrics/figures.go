package metrics

import "github.com/marlinkv/marlin/engine"

// Figure is one of engine.Stats's figures as a metric.
type Figure struct {
	// Name is the metric's name without a prefix ("keys",
	// "puts_total"); Prometheus names are "marlin_engine_" + Name.
	Name string
	Help string // one line for the metric's HELP
	// Counter: a total since the database was opened (else a gauge).
	Counter bool
	// Value reads the figure from a Stats.
	Value func(st *engine.Stats) float64
}

// Figures lists the figures of engine.Stats that the collector, expvar
// and marlin serve's /metrics publish: counters since Open and gauges.
// The list is built once; callers must not modify it.
func Figures() []Figure { return figures }

var figures = buildFigures()

func buildFigures() []Figure {
	var fs []Figure
	add := func(counter bool, name, help string, v func(st *engine.Stats) float64) {
		fs = append(fs, Figure{Name: name, Help: help, Counter: counter, Value: v})
	}
	const g, c = false, true
	f := func(v int64) float64 { return float64(v) }
	add(g, "keys", "Index entries (expired keys not yet reclaimed included).", func(st *engine.Stats) float64 { return f(st.Keys) })
	add(g, "segments", "Segment files.", func(st *engine.Stats) float64 { return float64(len(st.Segments)) })
	add(g, "live_bytes", "Bytes of records the index points at, over all segments.", func(st *engine.Stats) float64 { return f(st.LiveBytes) })
	add(g, "dead_bytes", "Bytes of superseded records, tombstones and markers, over all segments.", func(st *engine.Stats) float64 { return f(st.DeadBytes) })
	add(g, "disk_bytes", "Bytes of the segment files.", func(st *engine.Stats) float64 { return f(st.DiskBytes) })
	add(g, "arena_bytes", "Off-heap memory in use: the index's resident slot pages and the write buffer.", func(st *engine.Stats) float64 { return f(st.ArenaBytes) })
	add(g, "index_capacity", "Home slots of the index over all shards.", func(st *engine.Stats) float64 { return f(st.Index.Capacity) })
	add(g, "index_load_factor", "Index entries over its capacity.", func(st *engine.Stats) float64 { return st.Index.LoadFactor })
	add(g, "index_resident_bytes", "Slot memory the OS holds for the index (stats marlin_index_bytes).", func(st *engine.Stats) float64 { return f(st.Index.ResidentBytes) })
	add(g, "index_live_bytes", "Bytes in the index's live slot blocks.", func(st *engine.Stats) float64 { return f(st.Index.LiveBytes) })
	add(g, "index_address_bytes", "Address space the index's allocator has carved from its reservation.", func(st *engine.Stats) float64 { return f(st.Index.AddressBytes) })
	add(g, "index_reserve_bytes", "The index's address space reservation.", func(st *engine.Stats) float64 { return f(st.Index.ReserveBytes) })
	add(c, "puts_total", "Puts.", func(st *engine.Stats) float64 { return f(st.Puts) })
	add(c, "deletes_total", "Deletes.", func(st *engine.Stats) float64 { return f(st.Deletes) })
	add(c, "gets_total", "Gets.", func(st *engine.Stats) float64 { return f(st.Gets) })
	add(c, "batches_total", "Batches.", func(st *engine.Stats) float64 { return f(st.Batches) })
	add(c, "syncs_total", "fsyncs of segment files.", func(st *engine.Stats) float64 { return f(st.Syncs) })
	add(c, "rolls_total", "Segment rolls (a full active segment sealed, a new one started).", func(st *engine.Stats) float64 { return f(st.Rolls) })
	add(c, "written_bytes_total", "Bytes the engine wrote to segment files (compaction's included).", func(st *engine.Stats) float64 { return f(st.BytesWritten) })
	add(c, "user_bytes_total", "Key and value bytes given to the engine.", func(st *engine.Stats) float64 { return f(st.UserBytes) })
	add(c, "truncated_bytes_total", "Torn tail bytes dropped at open.", func(st *engine.Stats) float64 { return f(st.TruncatedBytes) })
	add(c, "compactions_total", "Compaction passes that rewrote at least one segment.", func(st *engine.Stats) float64 { return f(st.Compactions) })
	add(c, "segments_removed_total", "Segments deleted by compaction.", func(st *engine.Stats) float64 { return f(st.SegmentsRemoved) })
	add(c, "reclaimed_bytes_total", "Bytes of the segments compaction deleted.", func(st *engine.Stats) float64 { return f(st.BytesReclaimed) })
	add(c, "rewritten_bytes_total", "Bytes compaction copied forward.", func(st *engine.Stats) float64 { return f(st.BytesRewritten) })
	add(c, "compaction_skipped_bytes_total", "Damaged bytes compaction met (their segments are skipped, not removed).", func(st *engine.Stats) float64 { return f(st.CompactionSkippedBytes) })
	add(c, "evicted_bytes_total", "Record bytes of the keys cache mode evicted (--max-disk).", func(st *engine.Stats) float64 { return f(st.EvictedBytes) })
	add(c, "segments_evicted_total", "Segments cache mode evicted (--max-disk).", func(st *engine.Stats) float64 { return f(st.SegmentsEvicted) })
	add(c, "second_chances_total", "Keys cache mode copied forward instead of evicting them, because they were read (--evict-second-chance).", func(st *engine.Stats) float64 { return f(st.SecondChances) })
	add(g, "damaged_segments", "Segments compaction skips until the database is reopened.", func(st *engine.Stats) float64 { return float64(st.DamagedSegments) })
	add(g, "segments_awaiting_deletion", "Compacted segments whose files wait for the next snapshot.", func(st *engine.Stats) float64 { return float64(st.AwaitingDeletion) })
	add(c, "snapshots_total", "Index snapshots written.", func(st *engine.Stats) float64 { return f(st.Snapshots) })
	add(g, "last_snapshot_seconds", "How long the last index snapshot took to write.", func(st *engine.Stats) float64 { return st.LastSnapshotTime.Seconds() })
	add(g, "opened_from_snapshot", "1 if open loaded an index snapshot, 0 if it replayed every segment.", func(st *engine.Stats) float64 {
		if st.OpenedFromSnapshot {
			return 1
		}
		return 0
	})
	add(g, "records_replayed", "Records open replayed.", func(st *engine.Stats) float64 { return f(st.RecordsReplayed) })
	add(g, "open_seconds", "How long open took.", func(st *engine.Stats) float64 { return st.OpenTime.Seconds() })
	add(c, "expired_reclaimed_total", "Expired keys the expirer removed from the index.", func(st *engine.Stats) float64 { return f(st.ExpiredReclaimed) })
	add(c, "pread_reads_total", "Records read with pread instead of through the mapping (the cold read path).", func(st *engine.Stats) float64 { return f(st.PreadReads) })
	add(c, "cold_probes_reused_total", "Writes whose index probe made before the writer mutex was reused under it.", func(st *engine.Stats) float64 { return f(st.ColdProbesReused) })
	return fs
}
