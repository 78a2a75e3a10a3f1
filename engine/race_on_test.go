//go:build race

package engine

// raceEnabled: the race detector makes the sweeps' 65536-shard walks (index
// snapshots, Verify) tens of times slower, so they check fewer points.
const raceEnabled = true
