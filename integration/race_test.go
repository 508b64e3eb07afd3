//go:build race

package integration

// raceEnabled: this test binary was built with -race, so TestMain builds
// the daemon with -race too (go test -race ./integration/).
const raceEnabled = true
