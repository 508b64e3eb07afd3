package vhd

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
)

// tinyFixed returns a valid fixed disk of 4 sectors.
func tinyFixed() []byte {
	r := synthDynamic(4096, 2048, 4, 512, 0)
	f := append([]byte(nil), r.segs[0]...)
	be.PutUint32(f[offDiskType:], uint32(DiskTypeFixed))
	be.PutUint64(f[offDataOffset:], NoDataOffset)
	be.PutUint32(f[offChecksum:], checksum(f, offChecksum))
	return append(make([]byte, 2048), f...)
}

// tinyDynamic returns a valid dynamic disk of 8 blocks of 512 bytes, two of
// them allocated: head footer copy, header at 512, table at 1536, blocks
// (bitmap + data) at 2048 and 3072, tail footer at 4096.
func tinyDynamic() []byte {
	r := synthDynamic(4608, 4096, 8, 512, 0)
	b := make([]byte, 4608)
	for at, seg := range r.segs {
		copy(b[at:], seg)
	}
	bat := b[1536:2048]
	for k := range 128 {
		be.PutUint32(bat[4*k:], UnusedBlock)
	}
	be.PutUint32(bat[0:], 2048/512)
	be.PutUint32(bat[20:], 3072/512)
	return b
}

// TestMain shortens the fuzzer's minimization of new inputs from 60 s to 5 s
// unless -test.fuzzminimizetime is given: the seeds are whole VHD files of
// kilobytes, and Go's byte minimizer tries every sub-range of an input (its
// cost grows with the square of the length), so at the default each new
// input would stall fuzzing for a minute.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.fuzzminimizetime" })
	if !given {
		if err := flag.Set("test.fuzzminimizetime", "5s"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

func TestTinyFixtures(t *testing.T) {
	for name, b := range map[string][]byte{"fixed": tinyFixed(), "dynamic": tinyDynamic()} {
		info := inspectBytes(t, b)
		accepted(t, info)
		if name == "dynamic" && info.Dynamic.AllocatedBlocks != 2 {
			t.Errorf("dynamic: %+v", info.Dynamic)
		}
	}
}

// FuzzInspect checks that Inspect never panics or errs on bytes in memory,
// that its findings are consistent, and that it allocates no more than a
// small constant plus a fraction of the input.
func FuzzInspect(f *testing.F) {
	dir := samplesDir(f)
	for _, name := range []string{"qemu.vhd", "win8.vhd", "xapi.vhd", "win8-child.vhd"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		// Small qemu-img disks: the converted ones are megabytes.
		tmp := f.TempDir()
		for k, c := range []struct{ opts, size string }{{"subformat=dynamic", "10M"}, {"force_size=on", "10000000"}, {"subformat=fixed", "16K"}} {
			p := filepath.Join(tmp, fmt.Sprintf("seed%d.vhd", k))
			run(f, "qemu-img", "create", "-q", "-f", "vpc", "-o", c.opts, p, c.size)
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(tinyFixed())
	f.Add(tinyDynamic())
	f.Add(tinyFixed()[1:]) // legacy 511-byte footer
	f.Add([]byte{})
	f.Add([]byte(footerCookie))
	f.Fuzz(func(t *testing.T, data []byte) {
		// runtime/metrics is read without stopping the world (unlike
		// ReadMemStats); it counts large allocations at once, which is
		// what this bound is about.
		s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
		metrics.Read(s)
		before := s[0].Value.Uint64()
		info, err := InspectAt(bytes.NewReader(data), int64(len(data)), testNow)
		metrics.Read(s)
		if err != nil {
			t.Fatalf("error on in-memory input: %v", err)
		}
		if n := s[0].Value.Uint64() - before; n > uint64(len(data))+1<<20 {
			t.Fatalf("allocated %d bytes for a %d-byte input", n, len(data))
		}
		checkInfo(t, info)
	})
}

// checkInfo checks the invariants of any Info.
func checkInfo(t *testing.T, info *Info) {
	t.Helper()
	if info == nil {
		t.Fatal("nil Info")
	}
	var firstInvalid, firstUnsafe *Finding
	warnings := 0
	for k := range info.Findings {
		f := &info.Findings[k]
		if severityOf(f.Rule) != f.Severity {
			t.Fatalf("finding %v has severity %v, rule says %v", *f, f.Severity, severityOf(f.Rule))
		}
		if f.Message == "" || strings.ContainsAny(f.Message, "\n\r") {
			t.Fatalf("bad message in %v", *f)
		}
		switch f.Severity {
		case Invalid:
			if firstInvalid == nil {
				firstInvalid = f
			}
		case Unsafe:
			if firstUnsafe == nil {
				firstUnsafe = f
			}
		case Warning:
			warnings++
		}
	}
	want := firstInvalid
	if want == nil {
		want = firstUnsafe
	}
	got := info.Refusal()
	if (got == nil) != (want == nil) || (got != nil && *got != *want) {
		t.Fatalf("Refusal() = %v, want %v; findings %v", got, want, info.Findings)
	}
	if w := info.Warnings(); len(w) != warnings {
		t.Fatalf("Warnings() has %d, want %d", len(w), warnings)
	}
	if info.Has("not-vhd") {
		if len(info.Findings) != 1 || info.DiskType != 0 || info.CurrentSize != 0 || info.Dynamic != nil || info.UniqueID != ([16]byte{}) {
			t.Fatalf("not-vhd with facts: %+v", info)
		}
	}
	if info.DiskType == DiskTypeFixed && info.Dynamic != nil {
		t.Fatalf("fixed disk with dynamic facts %+v", info.Dynamic)
	}
	if d := info.Dynamic; d != nil && d.AllocatedBlocks > d.MaxTableEntries {
		t.Fatalf("%d allocated blocks of %d entries", d.AllocatedBlocks, d.MaxTableEntries)
	}
	if info.GeometrySize != info.Geometry.Size() {
		t.Fatalf("GeometrySize %d for %v", info.GeometrySize, info.Geometry)
	}
}
