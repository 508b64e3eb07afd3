package integration

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// vhdFixture is a VHD made by qemu-img from random raw data, with the
// figures an upload of it must produce.
type vhdFixture struct {
	Path        string // the VHD
	Raw         string // the raw disk it was converted from
	Subformat   string // fixed or dynamic
	Size        int64  // bytes of the VHD file
	VirtualSize int64  // qemu-img info's virtual-size
	MD5, SHA512 string // md5sum and sha512sum of the VHD file
}

const mib = 1 << 20

// rawDisk writes a raw disk of size bytes: random data with zero runs a
// sparse copy turns into holes (MiB 2-3 entirely, which a dynamic VHD
// leaves unallocated, and the second half of MiB 5, which stays inside an
// allocated block) and zeros in the last 100 KiB.
func rawDisk(t testing.TB, size int64, seed uint64) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'i', 'm', 'g'}))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	zero := func(from, to int64) {
		from, to = min(from, size), min(to, size)
		clear(b[from:to])
	}
	zero(2*mib, 4*mib)
	zero(5*mib+mib/2, 6*mib)
	zero(size-100<<10, size)
	path := filepath.Join(t.TempDir(), "disk-"+strconv.FormatInt(size, 10)+".raw")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var fixtureSeed uint64

// makeVHD converts a new random raw disk of rawSize bytes to a VHD of the
// subformat ("fixed" or "dynamic", qemu-img's default) in t.TempDir().
func makeVHD(t testing.TB, rawSize int64, subformat string) vhdFixture {
	t.Helper()
	requireTools(t, "qemu-img", "md5sum", "sha512sum")
	fixtureSeed++
	raw := rawDisk(t, rawSize, fixtureSeed)
	return convertVHD(t, raw, subformat)
}

// convertVHD converts raw to a VHD of the subformat in t.TempDir().
func convertVHD(t testing.TB, raw, subformat string) vhdFixture {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(raw)+"-"+subformat+".vhd")
	args := []string{"convert", "-f", "raw", "-O", "vpc"}
	if subformat == "fixed" {
		args = append(args, "-o", "subformat=fixed")
	}
	run(t, "qemu-img", append(args, raw, out)...)
	return vhdFixture{
		Path: out, Raw: raw, Subformat: subformat,
		Size:        fileSize(t, out),
		VirtualSize: qemuVirtualSize(t, out),
		MD5:         md5sum(t, out),
		SHA512:      sha512sum(t, out),
	}
}

// qemuVirtualSize returns the virtual-size of `qemu-img info -f vpc
// --output=json path`.
var qemuVirtualSize = testutil.QemuVirtualSize
