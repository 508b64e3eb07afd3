package vhd

import (
	"path/filepath"
	"testing"
	"time"
)

// The facts of the shared samples, as qemu-img info -f vpc, vhdiinfo and
// 7zz l -slt report them (and a hex dump of their footers).
var sampleFacts = []struct {
	name         string
	diskType     DiskType
	currentSize  uint64
	geometry     Geometry
	creator      string
	version      string
	hostOS       string
	uniqueID     string
	timestamp    time.Time
	entries      uint32
	refusal      string   // "" when accepted
	warnings     []string // rule ids
	qemuGeometry bool     // qemu sizes it by geometry
}{
	{"qemu.vhd", DiskTypeDynamic, 41953280, Geometry{964, 5, 17}, "qemu", "5.3", "Wi2k",
		"787bb12d-a507-4d8e-8f08-2ad2e2148e32", time.Date(2015, 2, 9, 16, 8, 54, 0, time.UTC), 21,
		"", []string{"size-not-mib-aligned"}, true},
	{"win8.vhd", DiskTypeDynamic, 41943040, Geometry{963, 5, 17}, "win ", "6.3", "Wi2k",
		"adb71975-4b5b-0b40-b025-d06dab31b26f", time.Date(2015, 2, 10, 0, 24, 54, 0, time.UTC), 20,
		"", []string{"geometry-mismatch"}, false},
	{"xapi.vhd", DiskTypeDynamic, 41943040, Geometry{963, 5, 17}, "tap", "1.3", "",
		"52f28ef1-9372-41bb-ad2b-b4ca3b06d304", time.Date(2015, 2, 9, 17, 1, 31, 0, time.UTC), 20,
		"", []string{"geometry-mismatch"}, false},
	{"win8-child.vhd", DiskTypeDifferencing, 41943040, Geometry{963, 5, 17}, "win ", "10.0", "Wi2k",
		"41306552-577d-8f47-9771-6af2bac3499b", time.Date(2020, 7, 6, 10, 25, 34, 0, time.UTC), 20,
		"differencing-disk", []string{"geometry-mismatch"}, false},
}

func TestSamples(t *testing.T) {
	dir := samplesDir(t)
	for _, s := range sampleFacts {
		t.Run(s.name, func(t *testing.T) {
			path := filepath.Join(dir, s.name)
			info := inspectFile(t, path)
			if s.refusal == "" {
				accepted(t, info)
			} else {
				refused(t, info, s.refusal)
			}
			if info.DiskType != s.diskType || info.CurrentSize != s.currentSize || info.OriginalSize != s.currentSize {
				t.Errorf("type %v size %d original %d, want %v %d", info.DiskType, info.CurrentSize, info.OriginalSize, s.diskType, s.currentSize)
			}
			if info.Geometry != s.geometry || info.GeometrySize != s.geometry.Size() {
				t.Errorf("geometry %v (%d bytes), want %v", info.Geometry, info.GeometrySize, s.geometry)
			}
			if info.CreatorApplication != s.creator || info.CreatorVersionString() != s.version || info.CreatorHostOS != s.hostOS {
				t.Errorf("creator %q %q %q, want %q %q %q", info.CreatorApplication, info.CreatorVersionString(), info.CreatorHostOS, s.creator, s.version, s.hostOS)
			}
			if info.UniqueIDString() != s.uniqueID || !info.Timestamp.Equal(s.timestamp) || info.SavedState {
				t.Errorf("id %s time %v saved %v, want %s %v", info.UniqueIDString(), info.Timestamp, info.SavedState, s.uniqueID, s.timestamp)
			}
			d := info.Dynamic
			if d == nil || d.MaxTableEntries != s.entries || d.BlockSize != 2<<20 || d.AllocatedBlocks != 0 {
				t.Errorf("dynamic facts %+v, want %d entries of 2 MiB, none allocated", d, s.entries)
			}
			var warn []string
			for _, w := range info.Warnings() {
				warn = append(warn, w.Rule)
			}
			if len(warn) != len(s.warnings) || (len(warn) > 0 && warn[0] != s.warnings[0]) {
				t.Errorf("warnings %v, want %v", info.Warnings(), s.warnings)
			}
			for _, legacy := range []bool{false, true} {
				if info.QemuUsesGeometry(legacy) != s.qemuGeometry {
					t.Errorf("QemuUsesGeometry(%v) = %v, want %v", legacy, !s.qemuGeometry, s.qemuGeometry)
				}
			}
			t.Run("tools", func(t *testing.T) { crossCheck(t, path, info) })
		})
	}
}

func TestSampleChildParent(t *testing.T) {
	info := inspectBytes(t, sample(t, "win8-child.vhd"))
	d := info.Dynamic
	if d == nil || d.ParentName != `C:\Users\sergi\Downloads\win8.vhd` || FormatUUID(d.ParentUniqueID) != "adb71975-4b5b-0b40-b025-d06dab31b26f" {
		t.Fatalf("parent facts %+v", d)
	}
	// Parent locators of the child lie inside the file: nothing but the
	// disk type makes it unsafe.
	if info.Has("parent-locator-out-of-bounds") {
		t.Fatalf("findings %v", info.Findings)
	}
}
