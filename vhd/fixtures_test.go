package vhd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// fixture is a VHD made by qemu-img for a test.
type fixture struct {
	name      string
	path      string
	diskType  DiskType
	forceSize bool
	request   uint64 // size asked of qemu-img, bytes
	blocks    uint32 // allocated blocks expected in a dynamic disk
}

// rawData lists where non-zero data is written in a raw disk of size
// bytes before conversion, and returns how many 2 MiB blocks it touches.
func rawData(size int64) (offsets []int64, blocks uint32) {
	offsets = []int64{0, size / 2, size - 512}
	if size >= 50<<20 {
		offsets = []int64{0, 3<<20 + 7, 50 << 20, size - 512}
	}
	seen := map[int64]bool{}
	for _, o := range offsets {
		seen[o/(2<<20)] = true
	}
	return offsets, uint32(len(seen))
}

// makeRaw writes a sparse raw disk of size bytes with some non-zero data.
func makeRaw(t testing.TB, path string, size int64) uint32 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	offsets, blocks := rawData(size)
	for k, o := range offsets {
		if _, err := f.WriteAt([]byte(fmt.Sprintf("imagefs test data %d", k)), o); err != nil {
			t.Fatal(err)
		}
	}
	return blocks
}

// qemuFixtures makes the test VHDs with qemu-img in a temporary directory.
func qemuFixtures(t testing.TB) []fixture {
	t.Helper()
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	var fx []fixture
	create := func(name string, dt DiskType, force bool, size uint64) {
		opts := []string{}
		if dt == DiskTypeFixed {
			opts = append(opts, "subformat=fixed")
		}
		if force {
			opts = append(opts, "force_size=on")
		}
		p := filepath.Join(dir, name+".vhd")
		args := []string{"create", "-q", "-f", "vpc"}
		if len(opts) > 0 {
			args = append(args, "-o", strings.Join(opts, ","))
		}
		run(t, "qemu-img", append(args, p, strconv.FormatUint(size, 10))...)
		fx = append(fx, fixture{name, p, dt, force, size, 0})
	}
	convert := func(name string, dt DiskType, force bool, size int64) {
		raw := filepath.Join(dir, name+".raw")
		blocks := makeRaw(t, raw, size)
		opts := []string{}
		if dt == DiskTypeFixed {
			opts = append(opts, "subformat=fixed")
			blocks = 0
		}
		if force {
			opts = append(opts, "force_size=on")
		}
		p := filepath.Join(dir, name+".vhd")
		args := []string{"convert", "-q", "-f", "raw", "-O", "vpc"}
		if len(opts) > 0 {
			args = append(args, "-o", strings.Join(opts, ","))
		}
		run(t, "qemu-img", append(args, raw, p)...)
		if err := os.Remove(raw); err != nil {
			t.Fatal(err)
		}
		fx = append(fx, fixture{name, p, dt, force, uint64(size), blocks})
	}
	create("dynamic-10M", DiskTypeDynamic, false, 10<<20)
	create("dynamic-10M-force", DiskTypeDynamic, true, 10<<20)
	create("dynamic-100M", DiskTypeDynamic, false, 100<<20)
	create("dynamic-odd", DiskTypeDynamic, false, 10000000)
	create("dynamic-odd-force", DiskTypeDynamic, true, 10000000)
	create("fixed-10M", DiskTypeFixed, false, 10<<20)
	create("fixed-10M-force", DiskTypeFixed, true, 10<<20)
	create("fixed-odd", DiskTypeFixed, false, 10000000)
	create("fixed-odd-force", DiskTypeFixed, true, 10000000)
	convert("conv-dynamic-100M", DiskTypeDynamic, false, 100<<20)
	convert("conv-dynamic-100M-force", DiskTypeDynamic, true, 100<<20)
	convert("conv-dynamic-odd", DiskTypeDynamic, false, 10000000)
	convert("conv-fixed-10M", DiskTypeFixed, false, 10<<20)
	convert("conv-fixed-odd-force", DiskTypeFixed, true, 10000000)
	return fx
}

// qemuLegacy reports whether the installed qemu-img is older than 10.0,
// whose vpc driver sizes disks of unknown creators by geometry.
func qemuLegacy(t testing.TB) bool {
	t.Helper()
	out := run(t, "qemu-img", "--version")
	m := regexp.MustCompile(`version (\d+)\.`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("cannot parse qemu-img version from %q", out)
	}
	major, _ := strconv.Atoi(m[1])
	return major < 10
}

// sevenZipSize returns the Size 7-Zip lists for the disk inside a VHD.
func sevenZipSize(t testing.TB, path string) uint64 {
	t.Helper()
	out := run(t, "7zz", "l", "-slt", path)
	_, items, ok := strings.Cut(out, "\n----------\n")
	if !ok {
		t.Fatalf("7zz l -slt %s: no item list\n%s", path, out)
	}
	m := regexp.MustCompile(`(?m)^Size = (\d+)$`).FindStringSubmatch(items)
	if m == nil {
		t.Fatalf("7zz l -slt %s: no Size\n%s", path, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// vhdiSize returns the media size vhdiinfo reports.
func vhdiSize(t testing.TB, path string) uint64 {
	t.Helper()
	out := run(t, "vhdiinfo", path)
	m := regexp.MustCompile(`Media size\s*:.*\((\d+) bytes\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("vhdiinfo %s: no media size\n%s", path, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// crossCheck compares Inspect's sizes with qemu-img, 7-Zip and vhdiinfo.
func crossCheck(t *testing.T, path string, info *Info) {
	t.Helper()
	requireTool(t, "qemu-img")
	requireTool(t, "7zz")
	requireTool(t, "vhdiinfo")
	legacy := qemuLegacy(t)
	if got, want := uint64(testutil.QemuVirtualSize(t, path)), info.QemuVirtualSize(legacy); got != want {
		t.Errorf("qemu-img virtual-size %d, want %d (Current Size %d, geometry size %d, creator %q, qemu legacy %v)",
			got, want, info.CurrentSize, info.GeometrySize, info.CreatorApplication, legacy)
	}
	if got := sevenZipSize(t, path); got != info.CurrentSize {
		t.Errorf("7zz Size %d, want Current Size %d", got, info.CurrentSize)
	}
	if got := vhdiSize(t, path); got != info.CurrentSize {
		t.Errorf("vhdiinfo media size %d, want Current Size %d", got, info.CurrentSize)
	}
}

func TestQemuFixtures(t *testing.T) {
	for _, fx := range qemuFixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			info := inspectFile(t, fx.path)
			accepted(t, info)
			if info.DiskType != fx.diskType {
				t.Errorf("DiskType %v, want %v", info.DiskType, fx.diskType)
			}
			want := roundUp(fx.request, SectorSize)
			if fx.forceSize {
				if info.CurrentSize != want {
					t.Errorf("force_size: Current Size %d, want %d", info.CurrentSize, want)
				}
				if info.Geometry != MaxGeometry || info.CreatorApplication != "qem2" || !info.Has("geometry-mismatch") {
					t.Errorf("force_size: geometry %v, creator %q, findings %v; want %v, \"qem2\", geometry-mismatch",
						info.Geometry, info.CreatorApplication, info.Findings, MaxGeometry)
				}
			} else {
				// qemu rounds the size up to a whole geometry.
				if info.CurrentSize < want || info.CurrentSize != info.GeometrySize || info.CreatorApplication != "qemu" {
					t.Errorf("Current Size %d, geometry size %d, creator %q; want >= %d, equal, \"qemu\"",
						info.CurrentSize, info.GeometrySize, info.CreatorApplication, want)
				}
				if g := GeometryForSize(info.CurrentSize); g != info.Geometry {
					t.Errorf("geometry %v, spec's CHS algorithm gives %v", info.Geometry, g)
				}
			}
			if info.OriginalSize != info.CurrentSize {
				t.Errorf("Original Size %d, want Current Size %d", info.OriginalSize, info.CurrentSize)
			}
			if got := info.Has("size-not-mib-aligned"); got != (info.CurrentSize%(1<<20) != 0) {
				t.Errorf("size-not-mib-aligned %v for Current Size %d", got, info.CurrentSize)
			}
			if info.CreatorHostOS != "Wi2k" || info.CreatorVersionString() != "5.3" || info.UniqueID == ([16]byte{}) {
				t.Errorf("creator host %q version %q id %s", info.CreatorHostOS, info.CreatorVersionString(), info.UniqueIDString())
			}
			st, err := os.Stat(fx.path)
			if err != nil {
				t.Fatal(err)
			}
			switch fx.diskType {
			case DiskTypeFixed:
				if info.Dynamic != nil || uint64(st.Size()) != info.CurrentSize+FooterSize {
					t.Errorf("fixed: Dynamic %v, file %d bytes, Current Size %d", info.Dynamic, st.Size(), info.CurrentSize)
				}
			case DiskTypeDynamic:
				d := info.Dynamic
				if d == nil {
					t.Fatalf("dynamic disk without DynamicInfo: %v", info.Findings)
				}
				wantEntries := uint32((info.CurrentSize + 2<<20 - 1) / (2 << 20))
				if d.BlockSize != 2<<20 || d.BitmapSize != 512 || d.MaxTableEntries != wantEntries || d.HeaderOffset != 512 || d.TableOffset != 1536 {
					t.Errorf("dynamic facts %+v, want 2 MiB blocks, %d entries", *d, wantEntries)
				}
				if d.AllocatedBlocks != fx.blocks {
					t.Errorf("AllocatedBlocks %d, want %d", d.AllocatedBlocks, fx.blocks)
				}
			}
			crossCheck(t, fx.path, info)
		})
	}
}

// TestLegacyFooter accepts a fixed disk ending in Virtual PC's 511-byte
// footer.
func TestLegacyFooter(t *testing.T) {
	for _, fx := range qemuFixtures(t) {
		if fx.name != "fixed-10M" {
			continue
		}
		b, err := os.ReadFile(fx.path)
		if err != nil {
			t.Fatal(err)
		}
		info := inspectBytes(t, b[:len(b)-1])
		accepted(t, info)
		if !info.LegacyFooter || info.DiskType != DiskTypeFixed {
			t.Fatalf("LegacyFooter %v, type %v", info.LegacyFooter, info.DiskType)
		}
		// The same file one byte longer is a padded upload.
		refused(t, inspectBytes(t, append(b[:len(b):len(b)], 0)), "not-vhd")
	}
}
