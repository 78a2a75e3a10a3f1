//go:build race

package bundle

// raceEnabled: the race detector's shadow memory makes resident-memory
// bounds meaningless.
const raceEnabled = true
