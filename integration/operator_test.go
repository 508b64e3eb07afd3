package integration

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestSecondWriterIsBusy: while one writer uploads image.vhd, a second
// open for writing fails with EBUSY instead of mixing two files into one
// "active" image; the first upload seals with its own checksum.
func TestSecondWriterIsBusy(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 10<<20, "fixed")
	m.mkimage("two")
	f, err := os.OpenFile(m.dataFile("two"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(src[:1<<20]); err != nil {
		t.Fatal(err)
	}
	_, err = os.OpenFile(m.dataFile("two"), os.O_WRONLY, 0)
	wantErrno(t, "second open for writing during an upload", err, syscall.EBUSY)
	if r := execCmd("cp", fx.Path, m.dataFile("two")); r.code == 0 {
		t.Errorf("a second cp during an upload exited 0: %s", r)
	}
	if _, err := f.Write(src[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got, want := m.prop("two", "checksum"), md5sum(t, fx.Path); got != want {
		t.Errorf("checksum %s, want %s (md5 of the first writer's file)", got, want)
	}
}

// TestUnsealedDataIsNotReadable: only sealed bits are read through
// image.vhd: queued and saving images refuse read-only opens (EACCES by
// name; by id there is no image.vhd before the seal, ENOENT); the writer
// reads its own data through its handle.
func TestUnsealedDataIsNotReadable(t *testing.T) {
	m := mount(t)
	id := m.mkimage("u")
	_, err := os.Open(m.dataFile("u"))
	wantErrno(t, "read-only open of a queued image", err, syscall.EACCES)
	_, err = os.Open(m.byID(id, "image.vhd"))
	wantErrno(t, "read-only open of a queued image by id", err, syscall.ENOENT)
	f, err := os.OpenFile(m.dataFile("u"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("partial"), 0); err != nil {
		t.Fatal(err)
	}
	_, err = os.Open(m.byID(id, "image.vhd"))
	wantErrno(t, "read-only open of a saving image by id", err, syscall.ENOENT)
	_, err = os.Open(m.dataFile("u"))
	wantErrno(t, "read-only open of a saving image", err, syscall.EACCES)
	buf := make([]byte, 7)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "partial" {
		t.Errorf("the writer reads its own data: %q, %v", buf, err)
	}
	f.Close()
}

// TestRecreateImageData: tools that unlink the destination and create it
// again (cp --remove-destination) upload; rm of an unsealed
// image.vhd removes it until a writer creates it again.
func TestRecreateImageData(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 10<<20, "fixed")
	m.mkimage("a")
	run(t, "cp", "--remove-destination", fx.Path, m.dataFile("a"))
	if got := m.prop("a", "status"); got != "active" {
		t.Fatalf("status after cp --remove-destination: %s", got)
	}
	m.mkimage("c")
	run(t, "rm", m.dataFile("c"))
	if _, err := os.Lstat(m.dataFile("c")); errnoOf(err) != syscall.ENOENT {
		t.Errorf("after rm of a queued image.vhd: lstat: %v, want ENOENT", err)
	}
	run(t, "cp", fx.Path, m.dataFile("c"))
	if got := m.prop("c", "status"); got != "active" {
		t.Errorf("status after rm and cp: %s", got)
	}
}

// TestFstatAfterDelete: a reader that has read part of an image keeps
// reading, and fstat works, after the image is deleted.
func TestFstatAfterDelete(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 10<<20, "fixed")
	id := m.mkimage("d")
	run(t, "cp", fx.Path, m.dataFile("d"))
	f, err := os.Open(m.byID(id, "image.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	run(t, "rmdir", m.images("d"))
	fi, err := f.Stat()
	if err != nil {
		t.Fatalf("fstat after delete: %v", err)
	}
	if fi.Size() != fileSize(t, fx.Path) {
		t.Errorf("fstat size %d", fi.Size())
	}
	rest, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read after delete: %v", err)
	}
	src, _ := os.ReadFile(fx.Path)
	if string(append(head, rest...)) != string(src) {
		t.Errorf("bytes read across the delete differ from the upload")
	}
}

// TestFsyncWorks: fsync on property files, sealed data and directories
// succeeds (editors and dd conv=fsync need it); an fsync of a property
// file sets what was written.
func TestFsyncWorks(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 10<<20, "fixed")
	m.mkimage("s")
	run(t, "cp", fx.Path, m.dataFile("s"))
	sh(t, `echo 512 | dd of="$1" conv=fsync status=none`, m.propFile("s", "min_disk"))
	if got := m.prop("s", "min_disk"); got != "512" {
		t.Errorf("min_disk after dd conv=fsync: %q", got)
	}
	for _, p := range []string{m.dataFile("s"), m.images("s"), m.images("s", "properties"), m.propFile("s", "min_ram")} {
		if out, err := exec.Command("sync", p).CombinedOutput(); err != nil {
			t.Errorf("sync %s: %v %s", p, err, out)
		}
	}
}

// TestShellEchoReportsRefusals: a write the rules refuse fails at the
// write itself, so a shell's echo (which ignores close errors) exits
// non-zero: non-root setting public, a taken name.
func TestShellEchoReportsRefusals(t *testing.T) {
	m := mount(t)
	m.mkimage("x")
	m.mkimage("y")
	if r := shErr(`echo y > "$1"`, m.propFile("x", "name")); r.code == 0 || !strings.Contains(r.stderr, "") {
		t.Errorf("echo y > properties/name (taken) exited 0")
	}
	if got := m.prop("x", "name"); got != "x" {
		t.Errorf("name after a refused rename: %q", got)
	}
	if r := shErr(`echo killed > "$1"`, m.propFile("x", "status")); r.code == 0 {
		t.Errorf("echo killed > properties/status exited 0")
	}
}

// TestEditPropertyByRename: editors and sed -i save by writing a
// temporary file and renaming it over the original; in properties/ that
// sets the key and leaves no temporary property behind.
func TestEditPropertyByRename(t *testing.T) {
	m := mount(t)
	m.mkimage("e")
	props := m.images("e", "properties")
	run(t, "sed", "-i", "s/0/2048/", m.propFile("e", "min_ram"))
	if got := m.prop("e", "min_ram"); got != "2048" {
		t.Errorf("min_ram after sed -i: %q", got)
	}
	sh(t, `T=$(mktemp -p "$1" .tmpXXXX) && echo 512 > "$T" && mv "$T" "$1/min_disk"`, props)
	if got := m.prop("e", "min_disk"); got != "512" {
		t.Errorf("min_disk after mktemp+mv: %q", got)
	}
	ents, err := os.ReadDir(props)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), "sed") {
			t.Errorf("temporary property left behind: %s", e.Name())
		}
	}
	// A refused value does not get in by a rename either.
	sh(t, `echo abc > "$1/tmpval"`, props)
	if r := shErr(`mv "$1/tmpval" "$1/min_ram"`, props); r.code == 0 {
		t.Errorf("mv of abc onto min_ram exited 0")
	}
	if got := m.prop("e", "min_ram"); got != "2048" {
		t.Errorf("min_ram after a refused rename: %q", got)
	}
}
