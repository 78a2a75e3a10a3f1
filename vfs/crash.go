package vfs

import (
	"maps"
	"math/rand/v2"
	"slices"
)

// crashChunk is the granularity at which CrashClone decides the fate of
// unsynced bytes: a page, the unit a real page cache writes back.
const crashChunk = 4 << 10

// CrashClone returns a new MemFS holding what would be on disk after a
// power loss at this instant. The original is unaffected; locks and open
// files are not carried over.
//
// The tree is each directory's entries as of its last SyncDir: creations,
// renames and removals not followed by SyncDir of their directory are
// undone. Directories made by MkdirAll always survive.
//
// Each file keeps its contents as of its last Sync. The bytes changed since
// are treated page by page, per 4 KiB-aligned chunk, in file order: each is
// kept as written, replaced by zeros, or dropped together with everything
// after it, chosen at random from rnd. If the file was truncated below its
// synced size since the last Sync, either the whole change is lost or the
// truncation survives and the bytes after it are treated as above.
//
// With a nil rnd every file holds exactly its synced contents. The outcome
// is a deterministic function of the state and rnd's sequence.
func (fs *MemFS) CrashClone(rnd *rand.Rand) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := crashCloner{rnd: rnd, done: map[*memNode]*memNode{}}
	return &MemFS{root: c.node(fs.root), locks: map[string]int{}}
}

type crashCloner struct {
	rnd *rand.Rand
	// done maps original nodes to their clones, so hard links stay shared.
	done map[*memNode]*memNode
}

// node returns the clone of n, or nil if n is a directory cloned already:
// a directory renamed without syncing both parents can be reachable twice,
// even in a cycle, and the clone keeps only the first place found.
func (c *crashCloner) node(n *memNode) *memNode {
	if m, ok := c.done[n]; ok {
		if n.isDir {
			return nil
		}
		return m
	}
	if !n.isDir {
		n.mu.RLock()
		data := crashContents(n.durable, n.data, n.dirtyFrom, c.rnd)
		m := &memNode{modTime: n.modTime, data: data, durable: slices.Clone(data), dirtyFrom: len(data)}
		n.mu.RUnlock()
		c.done[n] = m
		return m
	}
	m := newMemDir(n.modTime)
	c.done[n] = m // before recursing, to cut cycles
	// Sorted, so that a given rnd seed always yields the same crash.
	for _, name := range slices.Sorted(maps.Keys(n.synced)) {
		child := c.node(n.synced[name])
		if child == nil {
			continue
		}
		m.children[name] = child
		m.synced[name] = child
	}
	return m
}

// crashContents returns a file's contents after a crash, given its synced
// contents, its current contents and the offset below which they agree.
func crashContents(durable, data []byte, dirtyFrom int, rnd *rand.Rand) []byte {
	if rnd == nil || (dirtyFrom < len(durable) && rnd.IntN(2) == 0) {
		return slices.Clone(durable)
	}
	out := make([]byte, dirtyFrom, len(data))
	copy(out, data)
	for off := dirtyFrom; off < len(data); {
		end := min((off/crashChunk+1)*crashChunk, len(data))
		switch rnd.IntN(3) {
		case 0: // written back
			out = append(out, data[off:end]...)
		case 1: // size reached disk, data did not
			out = append(out, make([]byte, end-off)...)
		default: // lost, and so is everything after it
			return out
		}
		off = end
	}
	return out
}
