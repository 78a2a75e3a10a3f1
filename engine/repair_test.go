package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/segment"
	"github.com/marlinkv/marlin/vfs"
)

// repairFixture writes 3000 keys in batches of 1000 (as marlin load does)
// on the OS filesystem, closes (everything fsynced), and cuts the last 100
// bytes of the newest segment, like `truncate -s -100`: the last batch
// loses its commit record. It returns the directory and the segment.
func repairFixture(t *testing.T) (dir, seg string) {
	dir = filepath.Join(t.TempDir(), "db")
	o := &Options{FS: vfs.Default, Logger: discardLogger, DisableSnapshots: false}
	db, err := Open(dir, o)
	require.NoError(t, err)
	for b := range 3 {
		var batch Batch
		for i := range 1000 {
			batch.Put(fmt.Appendf(nil, "key-%d-%04d", b, i), bytes.Repeat([]byte{'v'}, 100))
		}
		require.NoError(t, db.Write(&batch))
	}
	require.NoError(t, db.Close())
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, n := range names {
		if _, ok := segment.ParseFileName(n.Name()); ok {
			seg = filepath.Join(dir, n.Name()) // the newest: names sort by generation
		}
	}
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, fi.Size()-100))
	return dir, seg
}

// TestRepairCutsExactlyWhatItPlans: the plan names the offset and the 1,000
// keys of the batch whose commit was cut; ApplyRepair saves exactly those
// bytes to the side file and cuts exactly there; the other keys survive.
func TestRepairCutsExactlyWhatItPlans(t *testing.T) {
	dir, seg := repairFixture(t)
	before, err := os.ReadFile(seg)
	require.NoError(t, err)

	plan, err := PlanRepair(dir, nil)
	require.NoError(t, err)
	require.Empty(t, plan.Unrepairable)
	require.Len(t, plan.Cuts, 1)
	c := plan.Cuts[0]
	require.Equal(t, seg, c.File)
	require.Equal(t, int64(len(before)), c.Size)
	require.Less(t, c.Offset, c.Damage)
	records, keyed := plan.DroppedRecords()
	// The cut took the sync mark, the batch commit and the end of the last
	// put: the batch's other records still decode, and all are listed.
	require.Equal(t, 999, keyed)
	require.Equal(t, 999, records)
	for i, r := range c.Dropped {
		require.Equal(t, fmt.Sprintf("key-2-%04d", i), string(r.Key))
		require.True(t, r.Batch)
	}
	require.Equal(t, filepath.Dir(dir), filepath.Dir(plan.SaveTo))
	require.True(t, strings.HasPrefix(filepath.Base(plan.SaveTo), "db.repair-"))

	// Nothing changed yet.
	now, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, before, now)

	require.NoError(t, ApplyRepair(plan, &Options{Logger: discardLogger}))
	after, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, before[:c.Offset], after, "cut exactly at the planned offset")
	side, err := os.ReadFile(plan.SaveTo)
	require.NoError(t, err)
	hdr := fmt.Sprintf("MARLIN-REPAIR-DROPPED 1\nsegment %s generation %d offset %d length %d crc32c %08x\n",
		filepath.Base(seg), c.Generation, c.Offset, c.Size-c.Offset, c.CRC)
	require.Equal(t, hdr+string(before[c.Offset:])+"\n", string(side))

	db, err := Open(dir, &Options{Logger: discardLogger, ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	for b := range 3 {
		for _, i := range []int{0, 999} {
			_, err := db.Get(fmt.Appendf(nil, "key-%d-%04d", b, i))
			if b == 2 {
				require.ErrorIs(t, err, ErrNotFound)
			} else {
				require.NoError(t, err)
			}
		}
	}
	requireVerifyOK(t, dir, nil)
}

// TestRepairRefusesChangedDirectory: a plan made before the files changed
// is refused, and nothing is cut or saved.
func TestRepairRefusesChangedDirectory(t *testing.T) {
	dir, seg := repairFixture(t)
	plan, err := PlanRepair(dir, nil)
	require.NoError(t, err)
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, fi.Size()-8))
	err = ApplyRepair(plan, &Options{Logger: discardLogger})
	require.ErrorContains(t, err, "changed since the plan")
	fi2, err := os.Stat(seg)
	require.NoError(t, err)
	require.Equal(t, fi.Size()-8, fi2.Size())
	require.NoFileExists(t, plan.SaveTo)
}

// TestRepairSideFileNotInDir: the side file may not be put where recovery
// could read it.
func TestRepairSideFileNotInDir(t *testing.T) {
	dir, _ := repairFixture(t)
	plan, err := PlanRepair(dir, nil)
	require.NoError(t, err)
	plan.SaveTo = filepath.Join(dir, "dropped")
	require.ErrorIs(t, ApplyRepair(plan, nil), ErrBadOptions)
}
