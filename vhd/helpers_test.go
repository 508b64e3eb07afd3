package vhd

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// testNow is the reference time of tests: after every fixture and sample.
var testNow = time.Now().Add(time.Hour)

// skipOrFail skips the test, or fails it in CI.
var skipOrFail = testutil.SkipOrFail

// samplesDir returns the shared VHD samples directory: $IMAGEFS_VHD_SAMPLES
// or ../shared/vhd-samples from the module root.
var samplesDir = testutil.SamplesDir

// sample returns the bytes of a shared sample.
func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requireTool returns the path of an external tool, skipping (failing in
// CI) when it is missing.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not installed: %v", name, err)
	}
	return p
}

// run runs a command and returns its standard output; it fails the test
// on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// inspectBytes runs InspectAt on b at testNow.
func inspectBytes(t testing.TB, b []byte) *Info {
	t.Helper()
	info, err := InspectAt(bytes.NewReader(b), int64(len(b)), testNow)
	if err != nil {
		t.Fatalf("InspectAt: %v", err)
	}
	return info
}

// inspectFile runs InspectAt on the file at path.
func inspectFile(t testing.TB, path string) *Info {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	info, err := InspectAt(f, st.Size(), testNow)
	if err != nil {
		t.Fatalf("InspectAt(%s): %v", path, err)
	}
	return info
}

// img is a VHD file in memory with helpers to patch it.
type img []byte

var be = binary.BigEndian

func (m img) clone() img { return append(img(nil), m...) }

// foot returns the tail footer.
func (m img) foot() []byte { return m[len(m)-FooterSize:] }

// dynamic reports whether the tail footer's Disk Type is not fixed.
func (m img) dynamic() bool { return be.Uint32(m.foot()[offDiskType:]) != uint32(DiskTypeFixed) }

// setFooter lets fn patch the tail footer, then recomputes its Checksum
// and, for a dynamic disk, copies it to the head copy at offset 0.
func (m img) setFooter(fn func(f []byte)) img {
	f := m.foot()
	fn(f)
	m.fixFooter()
	return m
}

// fixFooter recomputes the tail footer's Checksum and refreshes the head
// copy of a dynamic disk.
func (m img) fixFooter() {
	f := m.foot()
	be.PutUint32(f[offChecksum:], checksum(f, offChecksum))
	if m.dynamic() {
		copy(m[:FooterSize], f)
	}
}

// hdr returns the dynamic header.
func (m img) hdr() []byte {
	off := be.Uint64(m.foot()[offDataOffset:])
	return m[off : off+DynamicHeaderSize]
}

// setHeader lets fn patch the dynamic header, then recomputes its
// Checksum.
func (m img) setHeader(fn func(h []byte)) img {
	h := m.hdr()
	fn(h)
	be.PutUint32(h[hdrChecksum:], checksum(h, hdrChecksum))
	return m
}

// bat returns the Block Allocation Table entries' bytes.
func (m img) bat() []byte {
	h := m.hdr()
	off := be.Uint64(h[hdrTableOffset:])
	return m[off : off+uint64(be.Uint32(h[hdrMaxTableEntries:]))*4]
}

// allocated returns the indexes of allocated table entries.
func (m img) allocated() []int {
	var idx []int
	b := m.bat()
	for k := 0; k+4 <= len(b); k += 4 {
		if be.Uint32(b[k:]) != UnusedBlock {
			idx = append(idx, k/4)
		}
	}
	return idx
}

// setBAT sets table entry k.
func (m img) setBAT(k int, v uint32) img {
	be.PutUint32(m.bat()[4*k:], v)
	return m
}

// getBAT returns table entry k.
func (m img) getBAT(k int) uint32 { return be.Uint32(m.bat()[4*k:]) }

// write stores m in dir/name and returns the path.
func (m img) write(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, m, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// refused asserts that info is refused with rule.
func refused(t testing.TB, info *Info, rule string) {
	t.Helper()
	r := info.Refusal()
	if r == nil {
		t.Fatalf("accepted, want refusal %q; findings: %v", rule, info.Findings)
	}
	if r.Rule != rule {
		t.Fatalf("refused with %v, want rule %q; findings: %v", *r, rule, info.Findings)
	}
	if r.Severity != severityOf(rule) {
		t.Fatalf("refusal %v has severity %v, want %v", *r, r.Severity, severityOf(rule))
	}
}

// accepted asserts that info has no Invalid or Unsafe finding.
func accepted(t testing.TB, info *Info) {
	t.Helper()
	if r := info.Refusal(); r != nil {
		t.Fatalf("refused: %v; findings: %v", *r, info.Findings)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
