//go:build race

package shared

// raceEnabled: under the race detector the model test runs a shorter
// workload and checks fewer crash images (every image reopens the
// database).
const raceEnabled = true
