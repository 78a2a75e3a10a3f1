package engine

// onceSnapshotCopy makes db's next snapshot call fn once, after it records
// its replay position and before it copies the index.
func (db *DB) onceSnapshotCopy(fn func()) {
	f := func() {
		db.snapshotCopyHook.Store(nil)
		fn()
	}
	db.snapshotCopyHook.Store(&f)
}

// onSnapshotTrailer makes db's snapshots call fn after the index copy and
// before the trailer's figures are taken, until cleared with nil.
func (db *DB) onSnapshotTrailer(fn func()) {
	if fn == nil {
		db.snapshotTrailerHook.Store(nil)
		return
	}
	db.snapshotTrailerHook.Store(&fn)
}
