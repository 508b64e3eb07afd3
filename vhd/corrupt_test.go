package vhd

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// corruptBases makes the files the corrupt cases patch: a dynamic disk with
// three allocated blocks (Current Size 10027008) and a small fixed disk.
func corruptBases(t testing.TB) (dynamic, fixed img) {
	t.Helper()
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeRaw(t, raw, 10000000)
	run(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", raw, filepath.Join(dir, "dynamic.vhd"))
	run(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", filepath.Join(dir, "fixed.vhd"), "1M")
	var err error
	dynamic, err = os.ReadFile(filepath.Join(dir, "dynamic.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	fixed, err = os.ReadFile(filepath.Join(dir, "fixed.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(dynamic.allocated()); n != 3 {
		t.Fatalf("dynamic base has %d allocated blocks, want 3", n)
	}
	return dynamic, fixed
}

// corruptCase is a file patched to break exactly one rule.
type corruptCase struct {
	name  string
	base  string // "dynamic" or "fixed"
	patch func(m img) img
	rule  string
	// sevenZip is true when 7zz t is known to fail on the file too.
	sevenZip bool
}

func u32(off int, v uint32) func(b []byte) { return func(b []byte) { be.PutUint32(b[off:], v) } }
func u64(off int, v uint64) func(b []byte) { return func(b []byte) { be.PutUint64(b[off:], v) } }

// tailOff is the offset of the tail footer of m.
func tailOff(m img) uint64 { return uint64(len(m) - FooterSize) }

var corruptCases = []corruptCase{
	{"empty", "fixed", func(m img) img { return img{} }, "not-vhd", true},
	{"tiny", "fixed", func(m img) img { return img("hello, world") }, "not-vhd", true},
	{"raw-disk", "fixed", func(m img) img { copy(m.foot(), "CONECTIX"); return m }, "not-vhd", true},
	{"dynamic-padded", "dynamic", func(m img) img { return append(m, make(img, 4096)...) }, "footer-missing", false},
	{"dynamic-truncated", "dynamic", func(m img) img { return m[:len(m)-FooterSize] }, "footer-missing", true},
	{"footer-checksum", "fixed", func(m img) img { m.foot()[offOriginalSize+7] ^= 1; return m }, "footer-checksum", true},
	{"features-no-reserved", "fixed", func(m img) img { return m.setFooter(u32(offFeatures, 0)) }, "footer-features", false},
	{"features-unknown", "fixed", func(m img) img { return m.setFooter(u32(offFeatures, 0x102)) }, "footer-features", false},
	{"footer-version", "fixed", func(m img) img { return m.setFooter(u32(offFormatVersion, 0x00020000)) }, "footer-version", false},
	{"disk-type-5", "dynamic", func(m img) img { return m.setFooter(u32(offDiskType, 5)) }, "disk-type", true},
	{"disk-type-0", "fixed", func(m img) img { return m.setFooter(u32(offDiskType, 0)) }, "disk-type", true},
	{"current-size-zero", "dynamic", func(m img) img { return m.setFooter(u64(offCurrentSize, 0)) }, "current-size-zero", true},
	{"current-size-unaligned", "dynamic", func(m img) img { return m.setFooter(u64(offCurrentSize, 10027008-1)) }, "current-size-unaligned", false},
	{"current-size-too-large", "dynamic", func(m img) img { return m.setFooter(u64(offCurrentSize, 2041<<30)) }, "current-size-too-large", true},
	{"fixed-data-offset", "fixed", func(m img) img { return m.setFooter(u64(offDataOffset, 512)) }, "fixed-data-offset", false},
	{"fixed-size-larger", "fixed", func(m img) img {
		return m.setFooter(func(f []byte) { be.PutUint64(f[offCurrentSize:], be.Uint64(f[offCurrentSize:])+512) })
	}, "fixed-size-mismatch", true},
	{"fixed-truncated", "fixed", func(m img) img {
		return append(m[:len(m)-2*FooterSize:len(m)-2*FooterSize], m.foot()...)
	}, "fixed-size-mismatch", true},
	{"fixed-padded", "fixed", func(m img) img {
		foot := m.clone().foot()
		return append(append(m[:len(m)-FooterSize], make(img, 1536)...), foot...)
	}, "fixed-size-mismatch", false},
	{"file-size-unaligned", "dynamic", func(m img) img {
		foot := m.clone().foot()
		return append(append(m[:len(m)-FooterSize], make(img, 100)...), foot...)
	}, "file-size-unaligned", false},
	{"head-copy-differs", "dynamic", func(m img) img {
		be.PutUint32(m[offTimeStamp:], 12345)
		be.PutUint32(m[offChecksum:], checksum(m[:FooterSize], offChecksum))
		return m
	}, "footer-copy-mismatch", true},
	{"head-copy-missing", "dynamic", func(m img) img { clear(m[:FooterSize]); return m }, "footer-copy-mismatch", true},
	{"header-outside", "dynamic", func(m img) img { return m.setFooter(u64(offDataOffset, uint64(len(m)))) }, "header-offset", true},
	{"header-at-zero", "dynamic", func(m img) img { return m.setFooter(u64(offDataOffset, 0)) }, "header-offset", true},
	{"header-in-tail", "dynamic", func(m img) img { return m.setFooter(u64(offDataOffset, tailOff(m)-512)) }, "header-offset", true},
	{"header-huge", "dynamic", func(m img) img { return m.setFooter(u64(offDataOffset, NoDataOffset-100)) }, "header-offset", true},
	{"header-cookie", "dynamic", func(m img) img { copy(m.hdr(), "cxspar5e"); return m }, "header-cookie", true},
	{"header-checksum", "dynamic", func(m img) img { m.hdr()[1000] = 1; return m }, "header-checksum", true},
	{"header-version", "dynamic", func(m img) img { return m.setHeader(u32(hdrVersion, 0x00010001)) }, "header-version", false},
	{"header-data-offset", "dynamic", func(m img) img { return m.setHeader(u64(hdrDataOffset, 0xFFFFFFFF)) }, "header-data-offset", false},
	{"block-size-3M", "dynamic", func(m img) img { return m.setHeader(u32(hdrBlockSize, 3<<20)) }, "block-size", true},
	{"block-size-256", "dynamic", func(m img) img { return m.setHeader(u32(hdrBlockSize, 256)) }, "block-size", true},
	{"block-size-0", "dynamic", func(m img) img { return m.setHeader(u32(hdrBlockSize, 0)) }, "block-size", true},
	{"table-too-small", "dynamic", func(m img) img { return m.setHeader(u32(hdrMaxTableEntries, 4)) }, "table-too-small", true},
	{"table-too-large", "dynamic", func(m img) img { return m.setHeader(u32(hdrMaxTableEntries, 0x7FFFFFFF)) }, "table-too-large", true},
	{"table-max-entries", "dynamic", func(m img) img { return m.setHeader(u32(hdrMaxTableEntries, 0xFFFFFFFF)) }, "table-too-large", true},
	{"table-in-tail", "dynamic", func(m img) img { return m.setHeader(u64(hdrTableOffset, tailOff(m)-256)) }, "table-out-of-bounds", true},
	{"table-huge-offset", "dynamic", func(m img) img { return m.setHeader(u64(hdrTableOffset, 1<<63)) }, "table-out-of-bounds", true},
	{"table-on-header", "dynamic", func(m img) img { return m.setHeader(u64(hdrTableOffset, 1024)) }, "table-overlap", true},
	{"table-on-head", "dynamic", func(m img) img { return m.setHeader(u64(hdrTableOffset, 0)) }, "table-overlap", true},
	{"block-past-end", "dynamic", func(m img) img { return m.setBAT(m.allocated()[2], uint32(len(m)/512)) }, "block-out-of-bounds", true},
	{"block-in-tail", "dynamic", func(m img) img { return m.setBAT(m.allocated()[2], m.getBAT(m.allocated()[2])+1) }, "block-out-of-bounds", true},
	{"block-on-header", "dynamic", func(m img) img { return m.setBAT(m.allocated()[0], 1) }, "block-overlaps-metadata", true},
	{"block-on-table", "dynamic", func(m img) img { return m.setBAT(m.allocated()[0], 2) }, "block-overlaps-metadata", true},
	{"block-same", "dynamic", func(m img) img { a := m.allocated(); return m.setBAT(a[1], m.getBAT(a[0])) }, "block-overlap", false},
	{"block-shifted", "dynamic", func(m img) img { a := m.allocated(); return m.setBAT(a[1], m.getBAT(a[0])+8) }, "block-overlap", true},
	{"block-all-same", "dynamic", func(m img) img {
		v := m.getBAT(m.allocated()[0])
		for k := range len(m.bat()) / 4 {
			m.setBAT(k, v)
		}
		return m
	}, "block-overlap", false},
	{"differencing", "dynamic", func(m img) img { return m.setFooter(u32(offDiskType, uint32(DiskTypeDifferencing))) }, "differencing-disk", false},
	{"parent-locator-outside", "dynamic", func(m img) img {
		return m.setHeader(func(h []byte) {
			copy(h[hdrLocators:], "W2ku")
			be.PutUint32(h[hdrLocators+8:], 66)
			be.PutUint64(h[hdrLocators+16:], uint64(len(m)-60))
		})
	}, "parent-locator-out-of-bounds", false},
	{"zero-unique-id", "fixed", func(m img) img { return m.setFooter(func(f []byte) { clear(f[offUniqueID : offUniqueID+16]) }) }, "zero-unique-id", false},
}

func TestCorrupt(t *testing.T) {
	dynamic, fixed := corruptBases(t)
	covered := map[string]bool{}
	for _, c := range corruptCases {
		covered[c.rule] = true
		t.Run(c.name, func(t *testing.T) {
			base := fixed
			if c.base == "dynamic" {
				base = dynamic
			}
			m := c.patch(base.clone())
			info := inspectBytes(t, m)
			refused(t, info, c.rule)
			if c.rule == "not-vhd" {
				if len(info.Findings) != 1 || info.DiskType != 0 || info.CurrentSize != 0 || info.Dynamic != nil || info.CreatorApplication != "" {
					t.Fatalf("not-vhd Info has facts or extra findings: %+v", info)
				}
			}
		})
	}
	for _, r := range rules {
		if r.Severity != Warning && !covered[r.ID] {
			t.Errorf("rule %q (%v) has no corrupt case", r.ID, r.Severity)
		}
	}
}

// TestCorruptSevenZip checks that 7-Zip's own VHD reader also rejects the
// corrupt files it is strict enough to notice.
func TestCorruptSevenZip(t *testing.T) {
	requireTool(t, "7zz")
	dynamic, fixed := corruptBases(t)
	dir := t.TempDir()
	n := 0
	for _, c := range corruptCases {
		if !c.sevenZip {
			continue
		}
		n++
		base := fixed
		if c.base == "dynamic" {
			base = dynamic
		}
		p := c.patch(base.clone()).write(t, dir, c.name+".vhd")
		if out, err := runErr("7zz", "t", "-tvhd", p); err == nil {
			t.Errorf("%s: 7zz t accepts what Inspect refuses as %s:\n%s", c.name, c.rule, out)
		}
	}
	if n < 5 {
		t.Fatalf("only %d cases checked with 7zz", n)
	}
	// And accepts the bases.
	for name, m := range map[string]img{"dynamic": dynamic, "fixed": fixed} {
		p := m.write(t, dir, name+".vhd")
		if out, err := runErr("7zz", "t", "-tvhd", p); err != nil {
			t.Errorf("7zz t %s: %v\n%s", name, err, out)
		}
	}
}

// TestWarnings checks each warning rule on an otherwise valid disk.
func TestWarnings(t *testing.T) {
	dynamic, _ := corruptBases(t)
	cases := []struct {
		name  string
		patch func(m img) img
		rule  string
	}{
		{"geometry", func(m img) img { return m.setFooter(func(f []byte) { f[offDiskGeometry+2]-- }) }, "geometry-mismatch"},
		{"not-mib", func(m img) img { return m }, "size-not-mib-aligned"},
		{"table-oversized", func(m img) img { return m.setHeader(u32(hdrMaxTableEntries, 100)) }, "table-oversized"},
		{"temporary", func(m img) img { return m.setFooter(u32(offFeatures, 3)) }, "temporary-disk"},
		{"saved-state", func(m img) img { return m.setFooter(func(f []byte) { f[offSavedState] = 1 }) }, "saved-state"},
		{"future", func(m img) img {
			return m.setFooter(u32(offTimeStamp, uint32(testNow.Add(24*time.Hour).Sub(vhdEpoch)/time.Second)))
		}, "future-timestamp"},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.rule] = true
		t.Run(c.name, func(t *testing.T) {
			info := inspectBytes(t, c.patch(dynamic.clone()))
			accepted(t, info)
			if !info.Has(c.rule) {
				t.Fatalf("no %s warning: %v", c.rule, info.Findings)
			}
			for _, w := range info.Warnings() {
				if w.Severity != Warning {
					t.Fatalf("Warnings() returned %v", w)
				}
			}
		})
	}
	for _, r := range rules {
		if r.Severity == Warning && !covered[r.ID] {
			t.Errorf("warning %q has no case", r.ID)
		}
	}
}

// TestFutureTimestampNow checks the now hook: the same footer is in the
// future for an earlier now only.
func TestFutureTimestampNow(t *testing.T) {
	b := sample(t, "win8.vhd") // Time Stamp 2015-02-10 00:24:54 UTC
	for _, c := range []struct {
		now  time.Time
		want bool
	}{
		{time.Date(2015, 2, 10, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2015, 2, 10, 0, 20, 0, 0, time.UTC), false}, // within ClockSkew
		{time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC), false},
	} {
		info, err := InspectAt(bytesReader(b), int64(len(b)), c.now)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Has("future-timestamp"); got != c.want {
			t.Errorf("now %v: future-timestamp %v, want %v", c.now, got, c.want)
		}
		accepted(t, info)
	}
}
