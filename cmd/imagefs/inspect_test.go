package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// samplesDir returns the shared VHD samples: $IMAGEFS_VHD_SAMPLES or
// ../shared/vhd-samples from the module root. With CI=true they must be
// there.
var samplesDir = testutil.SamplesDir

func runCmd(args ...string) (status int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	status = inspectMain(args, &out, &errOut)
	return status, out.String(), errOut.String()
}

var inspectSamples = []struct {
	name, diskType string
	size           uint64
	status         int
	verdict        string
}{
	{"qemu.vhd", "dynamic", 41953280, 0, "accepted with 1 warning"},
	{"win8.vhd", "dynamic", 41943040, 0, "accepted with 1 warning"},
	{"xapi.vhd", "dynamic", 41943040, 0, "accepted with 1 warning"},
	{"win8-child.vhd", "differencing", 41943040, 1, "refused (unsafe: differencing-disk)"},
}

func TestInspectSamples(t *testing.T) {
	dir := samplesDir(t)
	for _, s := range inspectSamples {
		t.Run(s.name, func(t *testing.T) {
			path := filepath.Join(dir, s.name)
			status, out, errOut := runCmd(path)
			if status != s.status || errOut != "" {
				t.Fatalf("status %d, stderr %q; want %d\n%s", status, errOut, s.status, out)
			}
			for _, re := range []string{
				`^` + regexp.QuoteMeta(path+": "+s.verdict) + `\n`,
				`(?m)^  disk type: +` + s.diskType + `$`,
				`(?m)^  virtual size: +` + strconv.FormatUint(s.size, 10) + ` bytes \(`,
			} {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("output does not match %s:\n%s", re, out)
				}
			}
			if s.status == 1 && !strings.Contains(out, "  unsafe: differencing-disk: ") {
				t.Errorf("no finding line:\n%s", out)
			}
		})
	}
}

func TestInspectJSON(t *testing.T) {
	dir := samplesDir(t)
	var args []string
	for _, s := range inspectSamples {
		args = append(args, filepath.Join(dir, s.name))
	}
	status, out, errOut := runCmd(append([]string{"--json"}, args...)...)
	if status != 1 || errOut != "" {
		t.Fatalf("status %d stderr %q, want 1", status, errOut)
	}
	var reports []struct {
		File        string `json:"file"`
		Accepted    bool   `json:"accepted"`
		DiskType    string `json:"disk_type"`
		VirtualSize uint64 `json:"virtual_size"`
		Findings    []struct {
			Severity, Rule, Message string
		} `json:"findings"`
		Dynamic *struct {
			BlockSize       uint32 `json:"block_size"`
			MaxTableEntries uint32 `json:"max_table_entries"`
		} `json:"dynamic"`
	}
	if err := json.Unmarshal([]byte(out), &reports); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(reports) != len(inspectSamples) {
		t.Fatalf("%d reports, want %d", len(reports), len(inspectSamples))
	}
	for k, s := range inspectSamples {
		r := reports[k]
		if r.File != args[k] || r.Accepted != (s.status == 0) || r.DiskType != s.diskType || r.VirtualSize != s.size ||
			r.Dynamic == nil || r.Dynamic.BlockSize != 2<<20 || len(r.Findings) == 0 || r.Findings[0].Rule == "" {
			t.Errorf("report %d: %+v", k, r)
		}
	}
}

func TestInspectNotVHD(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	status, out, _ := runCmd(p)
	if status != 1 || !strings.Contains(out, "  invalid: not-vhd: ") || strings.Contains(out, "disk type:") {
		t.Fatalf("status %d:\n%s", status, out)
	}
	status, out, _ = runCmd("--json", p)
	if status != 1 || strings.Contains(out, "disk_type") || !strings.Contains(out, `"rule": "not-vhd"`) {
		t.Fatalf("status %d:\n%s", status, out)
	}
}

func TestInspectUsage(t *testing.T) {
	status, out, errOut := runCmd("--help")
	if status != 0 || errOut != "" {
		t.Fatalf("--help: status %d stderr %q", status, errOut)
	}
	for _, want := range []string{"Usage: imagefs inspect [--json] FILE...", "Options:", "Exit status:", "Examples:", "differencing-disk"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{}, {"--bogus", "x.vhd"}} {
		if status, _, errOut := runCmd(args...); status != 2 || !strings.Contains(errOut, "imagefs inspect: ") {
			t.Errorf("%q: status %d stderr %q, want 2", args, status, errOut)
		}
	}
	// An unreadable file is exit 2 even beside a refused one.
	dir := samplesDir(t)
	status, _, errOut = runCmd(filepath.Join(dir, "win8-child.vhd"), filepath.Join(t.TempDir(), "missing.vhd"))
	if status != 2 || !strings.Contains(errOut, "missing.vhd") {
		t.Errorf("missing file: status %d stderr %q", status, errOut)
	}
	if status, _, _ = runCmd(t.TempDir()); status != 2 {
		t.Errorf("directory: status %d, want 2", status)
	}
}

// TestInspectRegistered checks that imagefs knows the subcommand.
func TestInspectRegistered(t *testing.T) {
	c, ok := commands["inspect"]
	if !ok || c.summary == "" {
		t.Fatalf("inspect not registered: %+v", commands)
	}
}
