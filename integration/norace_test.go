//go:build !race

package integration

// raceEnabled: this test binary was built without -race (see
// race_test.go); IMAGEFS_RACE=1 still builds the daemon with it.
const raceEnabled = false
