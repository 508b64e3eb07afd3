// Package testutil holds the helpers that the tests of several packages
// (integration, vhd, store, fs, cmd/imagefs) share: whether the run is CI
// (where nothing may be skipped), the shared VHD samples, qemu-img's view of
// a VHD, and a copy of the test binary that makes one system call as
// another user (sysop.go). It is imported by _test.go files only.
package testutil

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where nothing may be
// skipped: a missing prerequisite fails the test instead.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test with the message, or fails it with "CI=true: "
// and the message when InCI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}

// ModuleRoot returns the directory of the go.mod above the working
// directory (go test runs a package's tests in its own directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// sampleFiles are the shared samples the tests read.
var sampleFiles = []string{"qemu.vhd", "win8.vhd", "xapi.vhd", "win8-child.vhd"}

// SamplesDir returns the directory of the shared VHD samples (qemu.vhd,
// win8.vhd, xapi.vhd, win8-child.vhd): $IMAGEFS_VHD_SAMPLES, else
// ../shared/vhd-samples from the module root. When a sample is missing the
// test is skipped, or fails when CI=true.
func SamplesDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("IMAGEFS_VHD_SAMPLES")
	if dir == "" {
		dir = filepath.Join(ModuleRoot(t), "..", "shared", "vhd-samples")
	}
	for _, f := range sampleFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			SkipOrFail(t, "VHD samples not found (set IMAGEFS_VHD_SAMPLES): %v", err)
		}
	}
	return dir
}

// QemuVirtualSize returns the virtual-size in bytes of `qemu-img info -f
// vpc --output=json path`; it fails the test when qemu-img fails, the
// format is not vpc or the size is not positive.
func QemuVirtualSize(t testing.TB, path string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	cmd := exec.Command("qemu-img", "info", "-f", "vpc", "--output=json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("qemu-img info -f vpc --output=json %s: %v\n%s%s", path, err, out, stderr.Bytes())
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", path, err, out)
	}
	if info.Format != "vpc" || info.VirtualSize <= 0 {
		t.Fatalf("qemu-img info %s: format %q virtual-size %d", path, info.Format, info.VirtualSize)
	}
	return info.VirtualSize
}
