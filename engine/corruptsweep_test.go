package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// TestCorruptionSweep damages one place at a time in a sealed segment, the
// newest segment and the index snapshot of a closed database, three ways
// (one byte flipped, 8 bytes zeroed, 8 bytes of junk), at every stride-th
// offset, and checks:
//
//   - opened normally (read-only, from the snapshot), every key reads back
//     its value or ErrCorrupt, never a wrong value and never absent; Open
//     itself either succeeds or fails with ErrCorrupt;
//   - damage to a segment is reported, not skipped: a full replay (Open
//     without snapshots) fails with ErrCorrupt naming the file, unless the
//     damage lies past the last sync mark of the newest segment (a torn
//     tail), and Verify reports a problem;
//   - damage to the snapshot never loses a key (Open falls back to the log).
//
// TestCorruptSweep (recovery_test.go) checks the exact offsets reported for
// flipped bytes; this sweep adds zeroed and junk bytes, the snapshot, and
// reads through a snapshot-loaded index. TestCorruptionSweepOpen damages the
// files under an open DB.
func TestCorruptionSweep(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	stride := 8
	if raceEnabled || testing.Short() {
		stride = 24
	}
	if swEnvLong() {
		stride = 1
	}
	base, model, hist := corruptFixtureHistory(t)
	files := rcSegFiles(t, base, rcDir)
	require.GreaterOrEqual(t, len(files), 3)
	snaps := snapshotFiles(t, base)
	require.Len(t, snaps, 1)
	targets := []string{files[0], files[len(files)-1], rcDir + "/" + snaps[0]}
	cases := 0
	for _, path := range targets {
		orig := rcRead(t, base, path)
		isSnap := path == targets[2]
		for off := 0; off < len(orig); off += stride {
			for _, kind := range []string{"flip", "zero", "junk"} {
				d := corruptBytes(orig, off, kind)
				if bytes.Equal(d, orig) {
					continue // zeros over zero padding
				}
				cases++
				what := fmt.Sprintf("%s: %s at %d", path, kind, off)
				var torn map[string]bool
				if path == targets[1] {
					n := 8
					if kind == "flip" {
						n = 1
					}
					torn = tornKeys(t, orig, rcGen(t, path), int64(off), int64(min(off+n, len(orig))))
				}
				img := base.CrashClone(nil)
				rcWrite(t, img, path, d)
				checkDamagedImage(t, img, model, hist, torn, path, isSnap, off%(16*stride) == 0, what)
			}
		}
	}
	t.Logf("corruption sweep: %d damaged images checked (stride %d)", cases, stride)
}

// corruptBytes returns a copy of b damaged at off.
func corruptBytes(b []byte, off int, kind string) []byte {
	d := bytes.Clone(b)
	end := min(off+8, len(d))
	switch kind {
	case "flip":
		d[off] ^= 0xff
	case "zero":
		clear(d[off:end])
	case "junk":
		rnd := rand.New(rand.NewPCG(uint64(off), 7))
		for i := off; i < end; i++ {
			d[i] = byte(rnd.Uint32())
		}
	}
	return d
}

// corruptFixture builds a closed database with several 4 KiB segments,
// overwrites, deletes, a batch and TTLs, and a snapshot, and returns it
// with its contents.
func corruptFixture(t *testing.T) (*vfs.MemFS, map[string]string) {
	fs, model, _ := corruptFixtureHistory(t)
	return fs, model
}

// corruptFixtureHistory is corruptFixture that also returns every value
// each key ever had.
func corruptFixtureHistory(t *testing.T) (*vfs.MemFS, map[string]string, map[string][]string) {
	fs := vfs.NewMem()
	o := corruptOpts(fs)
	db, err := Open(rcDir, o)
	require.NoError(t, err)
	model := map[string]string{}
	hist := map[string][]string{}
	for i := range 150 {
		k, v := fmt.Sprintf("key-%03d", i), fmt.Sprintf("value-%03d-%s", i, bytes.Repeat([]byte{'v'}, 20+i%60))
		require.NoError(t, db.Put([]byte(k), []byte(v)))
		model[k] = v
	}
	for i := 0; i < 150; i += 9 {
		k := fmt.Sprintf("key-%03d", i)
		require.NoError(t, db.Delete([]byte(k)))
		delete(model, k)
	}
	var b Batch
	for i := 1; i < 150; i += 11 {
		k, v := fmt.Sprintf("key-%03d", i), fmt.Sprintf("batch-%03d", i)
		b.Put([]byte(k), []byte(v))
		model[k] = v
	}
	require.NoError(t, db.Write(&b))
	for i := 2; i < 150; i += 13 {
		k, v := fmt.Sprintf("key-%03d", i), fmt.Sprintf("ttl-%03d", i)
		require.NoError(t, db.PutTTL([]byte(k), []byte(v), time.Hour))
		model[k] = v
	}
	require.NoError(t, db.Close())
	for i := range 150 { // the values above, in order
		k := fmt.Sprintf("key-%03d", i)
		hist[k] = append(hist[k], fmt.Sprintf("value-%03d-%s", i, bytes.Repeat([]byte{'v'}, 20+i%60)))
		if i%11 == 1 {
			hist[k] = append(hist[k], fmt.Sprintf("batch-%03d", i))
		}
		if i%13 == 2 {
			hist[k] = append(hist[k], fmt.Sprintf("ttl-%03d", i))
		}
	}
	return fs, model, hist
}

// tornKeys returns the keys of the newest segment img (generation gen)
// whose latest record a full replay may roll back when bytes [off, end)
// are damaged: none, unless the damage reaches the last record, the sync
// mark Close appended, so that no mark shows the damaged data was fsynced
// and recovery takes it for a torn tail (Limitations). Then every key with
// a record in the unit holding off, or after it, may read an older value
// or be absent.
func tornKeys(t *testing.T, img []byte, gen uint64, off, end int64) map[string]bool {
	recs := rcLayout(t, img, gen)
	mark := recs[len(recs)-1]
	require.Equal(t, segment.KindSyncMark, mark.kind, "Close ends the newest segment with a sync mark")
	if end <= mark.off {
		return nil
	}
	i := 0
	for i < len(recs)-1 && recs[i].off+int64(recs[i].size) <= off {
		i++
	}
	// Back to the start of a batch: a batch is dropped whole.
	for i > 0 {
		r, _, err := segment.Decode(img[recs[i].off:], gen, recs[i].off, rcLim)
		require.NoError(t, err)
		if r.Kind != segment.KindBatchCommit && r.Flags&segment.FlagBatch == 0 && r.Kind != segment.KindSyncMark {
			break
		}
		p, _, err := segment.Decode(img[recs[i-1].off:], gen, recs[i-1].off, rcLim)
		require.NoError(t, err)
		if p.Flags&segment.FlagBatch == 0 && p.Kind != segment.KindSyncMark {
			break
		}
		i--
	}
	keys := map[string]bool{}
	for _, r := range recs[i:] {
		if r.key != "" {
			keys[r.key] = true
		}
	}
	return keys
}

func corruptOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, SegmentSize: 4096, WriteBufferSize: 4096, Sync: SyncNone,
		CompactionThreshold: -1, ExpiryInterval: -1, IndexReserve: 1 << 26, Logger: discardLogger}
}

// checkDamagedImage opens a damaged copy of the fixture and checks reads,
// a full replay, and (with verify) Verify. In the full replay the keys in
// torn may read an older value of theirs (hist) or be absent.
func checkDamagedImage(t *testing.T, img *vfs.MemFS, model map[string]string, hist map[string][]string,
	torn map[string]bool, path string, isSnap, verify bool, what string) {
	t.Helper()
	ro := corruptOpts(img)
	ro.ReadOnly = true
	db, err := Open(rcDir, ro)
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt, "%s: Open may only fail with ErrCorrupt", what)
		require.False(t, isSnap, "%s: a damaged snapshot must be ignored, not fail Open", what)
	} else {
		corrupt := 0
		for k := range hist { // every key, deleted ones too
			want, present := model[k]
			v, err := db.Get([]byte(k))
			switch {
			case !present:
				if !errors.Is(err, ErrNotFound) {
					require.ErrorIs(t, err, ErrCorrupt, "%s: deleted key %s", what, k)
				}
			case err == nil:
				require.Equal(t, want, string(v), "%s: key %s read a wrong value", what, k)
			case errors.Is(err, ErrCorrupt):
				corrupt++
				require.False(t, isSnap, "%s: key %s: a damaged snapshot must not make reads fail", what, k)
			default:
				require.NoError(t, err, "%s: key %s", what, k)
			}
		}
		require.NoError(t, db.Close())
	}

	full := corruptOpts(img)
	full.ReadOnly = true
	full.DisableSnapshots = true
	db, err = Open(rcDir, full)
	if err == nil {
		// Only damage a full replay cannot see as such: in the snapshot,
		// or taken for a torn tail (past the newest segment's last sync
		// mark, which a read-only open ignores).
		for k := range hist {
			want, present := model[k]
			v, err := db.Get([]byte(k))
			if torn[k] {
				if err == nil {
					require.Contains(t, hist[k], string(v), "%s: full replay: key %s read a value it never had", what, k)
				} else {
					require.ErrorIs(t, err, ErrNotFound, "%s: full replay: key %s", what, k)
				}
				continue
			}
			if !present {
				require.ErrorIs(t, err, ErrNotFound, "%s: full replay: deleted key %s", what, k)
				continue
			}
			require.NoError(t, err, "%s: full replay: key %s", what, k)
			require.Equal(t, want, string(v), "%s: full replay: key %s", what, k)
		}
		require.NoError(t, db.Close())
	} else {
		require.False(t, isSnap, "%s: a damaged snapshot fails a full replay: %v", what, err)
		require.ErrorIs(t, err, ErrCorrupt, what)
		var ce *segment.CorruptError
		require.ErrorAs(t, err, &ce, what)
		require.Equal(t, path, ce.File, "%s: the error names the damaged file", what)
	}

	if !verify || isSnap {
		return
	}
	rep, err := Verify(rcDir, corruptOpts(img))
	require.NoError(t, err, what)
	require.False(t, rep.OK(), "%s: Verify must report the damage", what)
}

// TestCorruptionSweepOpen damages every record of a sealed segment and of
// the active segment (flushed) under an open DB, three ways, and checks
// that the damaged record's key reads ErrCorrupt (through Get, View and
// Has), every other key its value, and that a write to the damaged key is
// refused; restoring the bytes restores the key.
func TestCorruptionSweepOpen(t *testing.T) {
	t.Parallel() // a long test: runs beside the other long ones, after the short ones
	fs, model := corruptFixture(t)
	o := corruptOpts(fs)
	db, err := Open(rcDir, o)
	require.NoError(t, err)
	defer db.Close()
	// A few more writes, flushed, so the active segment has records too.
	for i := range 8 {
		k, v := fmt.Sprintf("active-%d", i), fmt.Sprintf("active-value-%d", i)
		require.NoError(t, db.Put([]byte(k), []byte(v)))
		model[k] = v
	}
	require.NoError(t, db.Sync())
	files := rcSegFiles(t, fs, rcDir)
	cases := 0
	for _, path := range []string{files[0], files[len(files)-1]} {
		orig := rcRead(t, fs, path)
		for _, r := range rcLayout(t, orig, rcGen(t, path)) {
			if r.kind != segment.KindPut || model[r.key] != string(r.value) {
				continue // only records the index points at are read
			}
			for _, kind := range []string{"flip", "zero", "junk"} {
				for _, off := range []int64{r.off, r.off + 9, r.valOff - 1, r.off + int64(r.size) - 1} {
					d := corruptBytes(orig, int(off), kind)
					end := r.off + int64(r.size)
					if bytes.Equal(d[r.off:end], orig[r.off:end]) {
						continue // zeros over zero padding, and beyond the record
					}
					cases++
					what := fmt.Sprintf("%s: %s at %d (record of %s at %d)", path, kind, off, r.key, r.off)
					rcWrite(t, fs, path, d)
					_, err := db.Get([]byte(r.key))
					require.ErrorIs(t, err, ErrCorrupt, what)
					require.ErrorIs(t, db.View([]byte(r.key), func([]byte) error { return nil }), ErrCorrupt, what)
					_, err = db.Has([]byte(r.key))
					require.ErrorIs(t, err, ErrCorrupt, what)
					require.ErrorIs(t, db.Put([]byte(r.key), []byte("new")), ErrCorrupt, what)
					for k, want := range model {
						if k == r.key || off >= r.off+int64(r.size) {
							continue
						}
						v, err := db.Get([]byte(k))
						if err == nil {
							require.Equal(t, want, string(v), "%s: key %s", what, k)
							continue
						}
						// Damage can reach the next record when it runs past
						// this one's end (8 bytes of zeros or junk).
						require.ErrorIs(t, err, ErrCorrupt, "%s: key %s", what, k)
					}
					rcWrite(t, fs, path, orig)
					v, err := db.Get([]byte(r.key))
					require.NoError(t, err, "%s: restored", what)
					require.Equal(t, model[r.key], string(v))
				}
			}
		}
	}
	t.Logf("%d damaged records read", cases)
}
