package metrics

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/metrics/internal/wrapgen"
)

// TestWrappersGenerated fails when wrap_gen.go is not what the generator
// makes from the go-fuse this module builds with: run go generate.
func TestWrappersGenerated(t *testing.T) {
	want, err := wrapgen.Generate(".")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(wrapgen.File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Fatalf("%s is stale (go-fuse's fuse.RawFileSystem or the generator changed, or the file was edited): run go generate ./internal/metrics\nline %d is %q\ngenerator: %q", wrapgen.File, i+1, line(gl), line(wl))
	}
}
