package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// blocks returns st_blocks of path (512-byte units).
func blocks(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

// duKiB returns what du -k says path occupies.
func duKiB(t testing.TB, path string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(firstField(t, run(t, "du", "-k", path)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSparseImage uploads a mostly empty fixed VHD (qemu-img create, then
// 1 MiB of data at MiB 1: sparse locally) and checks that the mount shows
// its holes: st_blocks and du as the data file's, SEEK_HOLE finds the hole
// after the data, qemu-img map reports zero extents, and cp --sparse=auto
// makes a sparse copy with the same bytes (issue 13 item 20).
func TestSparseImage(t *testing.T) {
	requireTools(t, "qemu-img", "du", "cp", "dd", "cmp")
	m := mount(t)
	dir := t.TempDir()
	local := filepath.Join(dir, "empty.vhd")
	const size = 64 * mib
	run(t, "qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", local, strconv.Itoa(size))
	run(t, "dd", "if=/dev/urandom", "of="+local, "bs=1M", "seek=1", "count=1", "conv=notrunc", "status=none")
	full := fileSize(t, local) / 512
	if b := blocks(t, local); b > full/4 {
		t.Skipf("the local VHD is not sparse here (%d of %d blocks)", b, full)
	}
	id := m.mkimage("sparse")
	run(t, "cp", local, m.dataFile("sparse"))
	if got := m.prop("sparse", "status"); got != "active" {
		t.Fatalf("status %q, want active", got)
	}
	backing := blocks(t, m.backing(id))
	if backing > full/4 {
		t.Fatalf("STORE/data/%s.vhd occupies %d of %d blocks: the upload left no holes (test does not exercise them)", id, backing, full)
	}
	for _, p := range []string{m.dataFile("sparse"), m.byID(id, "image.vhd")} {
		rel := p[len(m.Mnt)+1:]
		if got := blocks(t, p); got != backing {
			t.Errorf("%s: st_blocks %d, the data file occupies %d (size %d blocks)", rel, got, backing, full)
		}
		if mnt, loc := duKiB(t, p), duKiB(t, local); mnt > loc+1024 {
			t.Errorf("du -k %s = %d, the local file %d", rel, mnt, loc)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
		if err != nil || hole >= size {
			t.Errorf("%s: SEEK_HOLE from 0 = %d (%v), want a hole before %d", rel, hole, err, size)
		}
		data, err := unix.Seek(int(f.Fd()), hole, unix.SEEK_DATA)
		if err != nil || data <= hole {
			t.Errorf("%s: SEEK_DATA from %d = %d (%v), want the data that follows", rel, hole, data, err)
		}
		f.Close()
	}

	// qemu-img map through by-id/: the holes are zero extents.
	var extents []struct {
		Start, Length int64
		Zero, Data    bool
	}
	out := run(t, "qemu-img", "map", "--output=json", "-f", "vpc", m.byID(id, "image.vhd"))
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var zero int64
	for _, e := range extents {
		if e.Zero {
			zero += e.Length
		}
	}
	if zero < size/2 {
		t.Errorf("qemu-img map by-id/%s/image.vhd: %d of %d bytes in zero extents, want most of them:\n%s", id, zero, size, strings.TrimSpace(out))
	}

	// cp --sparse=auto out of the mount keeps the holes.
	cp := filepath.Join(dir, "copy.vhd")
	run(t, "cp", "--sparse=auto", m.byID(id, "image.vhd"), cp)
	cmp(t, local, cp)
	if got := blocks(t, cp); got > full/4 {
		t.Errorf("cp --sparse=auto of by-id/%s/image.vhd occupies %d of %d blocks: not sparse", id, got, full)
	}
}
