package vhd

import (
	"errors"
	"io"
	"runtime"
	"testing"
)

// synthReader serves a large sparse file: explicit segments over a filler
// byte, so a test can claim huge structures without the memory.
type synthReader struct {
	size int64
	fill byte
	segs map[int64][]byte
}

func (s *synthReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := s.size - off; int64(n) > rest {
		n = int(rest)
	}
	for k := range p[:n] {
		p[k] = s.fill
	}
	for at, b := range s.segs {
		lo, hi := max(at, off), min(at+int64(len(b)), off+int64(n))
		if lo < hi {
			copy(p[lo-off:hi-off], b[lo-at:hi-at])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// synthDynamic returns a sparse dynamic VHD of size bytes whose header
// claims entries table entries of blockSize bytes at offset 1536; every
// other byte (the table included) is fill.
func synthDynamic(size int64, currentSize uint64, entries, blockSize uint32, fill byte) *synthReader {
	f := make([]byte, FooterSize)
	copy(f, footerCookie)
	be.PutUint32(f[offFeatures:], FeatureReserved)
	be.PutUint32(f[offFormatVersion:], FileFormatVersion)
	be.PutUint64(f[offDataOffset:], FooterSize)
	copy(f[offCreatorApp:], "test")
	be.PutUint64(f[offOriginalSize:], currentSize)
	be.PutUint64(f[offCurrentSize:], currentSize)
	g := GeometryForSize(currentSize)
	be.PutUint16(f[offDiskGeometry:], g.Cylinders)
	f[offDiskGeometry+2], f[offDiskGeometry+3] = g.Heads, g.SectorsPerTrack
	be.PutUint32(f[offDiskType:], uint32(DiskTypeDynamic))
	f[offUniqueID] = 1
	be.PutUint32(f[offChecksum:], checksum(f, offChecksum))
	h := make([]byte, DynamicHeaderSize)
	copy(h, dynamicCookie)
	be.PutUint64(h[hdrDataOffset:], NoDataOffset)
	be.PutUint64(h[hdrTableOffset:], 1536)
	be.PutUint32(h[hdrVersion:], HeaderVersion)
	be.PutUint32(h[hdrMaxTableEntries:], entries)
	be.PutUint32(h[hdrBlockSize:], blockSize)
	be.PutUint32(h[hdrChecksum:], checksum(h, hdrChecksum))
	return &synthReader{size: size, fill: fill, segs: map[int64][]byte{0: f, FooterSize: h, size - FooterSize: f}}
}

// allocated returns the bytes allocated while fn runs.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestAllocationBounded inspects files whose headers claim structures far
// larger than what Inspect may allocate for them.
func TestAllocationBounded(t *testing.T) {
	const limit = 256 << 10
	cases := []struct {
		name string
		r    *synthReader
		rule string
	}{
		// A 4 GiB table claimed in a 1 MiB file.
		{"huge-table-small-file", synthDynamic(1<<20, 2040<<30, 0xFFFFFFFF, 512, 0xFF), "table-too-large"},
		// A 16 MiB table in a 16 GiB file whose 4M entries all point at
		// the same in-bounds block: the references kept are capped by the
		// number of blocks that fit in the file.
		{"all-entries-same-block", synthDynamic(16<<30, 8<<40, 1<<22, 2<<20, 0x01), "current-size-too-large"},
		// The same entries at sector 0: counted, never kept.
		{"all-entries-on-metadata", synthDynamic(16<<30, 8<<40, 1<<22, 2<<20, 0x00), "current-size-too-large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var info *Info
			var err error
			n := allocated(func() { info, err = InspectAt(c.r, c.r.size, testNow) })
			if err != nil {
				t.Fatal(err)
			}
			refused(t, info, c.rule)
			if n > limit {
				t.Errorf("Inspect allocated %d bytes, want at most %d", n, limit)
			}
			t.Logf("allocated %d bytes; findings %v", n, info.Findings)
		})
	}
}

func TestAllocationBoundedFindings(t *testing.T) {
	r := synthDynamic(16<<30, 8<<40, 1<<22, 2<<20, 0x01)
	info, err := InspectAt(r, r.size, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Has("block-overlap") || info.Dynamic.AllocatedBlocks != 1<<22 {
		t.Fatalf("findings %v, dynamic %+v", info.Findings, info.Dynamic)
	}
	r = synthDynamic(16<<30, 8<<40, 1<<22, 2<<20, 0x00)
	if info, _ = InspectAt(r, r.size, testNow); !info.Has("block-overlaps-metadata") {
		t.Fatalf("findings %v", info.Findings)
	}
}

// errReader fails every read.
type errReader struct{}

var errBroken = errors.New("broken disk")

func (errReader) ReadAt([]byte, int64) (int, error) { return 0, errBroken }

// TestIOError returns reader errors, and a reader shorter than the size
// claimed, as errors, not findings.
func TestIOError(t *testing.T) {
	if _, err := InspectAt(errReader{}, 1<<20, testNow); !errors.Is(err, errBroken) {
		t.Fatalf("error %v, want %v", err, errBroken)
	}
	b := sample(t, "qemu.vhd")
	if _, err := InspectAt(bytesReader(b), int64(len(b))+4096, testNow); err == nil {
		t.Fatalf("no error for a reader shorter than the size")
	}
	// A reader that fails after the footers: header read fails.
	r := &failAfter{r: bytesReader(b), n: 2}
	if _, err := InspectAt(r, int64(len(b)), testNow); !errors.Is(err, errBroken) {
		t.Fatalf("error %v, want %v", err, errBroken)
	}
}

type failAfter struct {
	r io.ReaderAt
	n int
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	if f.n == 0 {
		return 0, errBroken
	}
	f.n--
	return f.r.ReadAt(p, off)
}

// TestNegativeSize treats a negative size as not a VHD.
func TestNegativeSize(t *testing.T) {
	info, err := InspectAt(errReader{}, -1, testNow)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, info, "not-vhd")
}
