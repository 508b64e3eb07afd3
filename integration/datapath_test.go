package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// wantNoData checks that dir lists no image.vhd and that its lookup
// (stat, open) is ENOENT.
func wantNoData(t *testing.T, m *fsMount, dir, what string) {
	t.Helper()
	rel := dir[len(m.Mnt)+1:]
	if names := dirNames(t, dir); slices.Contains(names, "image.vhd") {
		t.Errorf("%s: ls %s lists image.vhd: %v", what, rel, names)
	}
	p := filepath.Join(dir, "image.vhd")
	_, err := os.Stat(p)
	wantErrno(t, what+": stat "+rel+"/image.vhd", err, syscall.ENOENT)
	fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
	if err == nil {
		syscall.Close(fd)
	}
	wantErrno(t, what+": open "+rel+"/image.vhd", err, syscall.ENOENT)
}

// TestByIDDataSealedOrENOENT: by-id/<id>/image.vhd is the sealed bytes or
// ENOENT (issue 13 item 21). A queued image and an upload in progress show
// no image.vhd under by-id/ (images/<name>/image.vhd is the upload's
// target); a killed image shows none under by-id/, an empty upload target
// under images/ (unreadable: EACCES; rm -r finds it first, see
// delete_test.go), and cp uploads anew.
func TestByIDDataSealedOrENOENT(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "cmp", "stat")
	fx := makeVHD(t, 2*mib, "dynamic")

	id := m.mkimage("queued")
	wantNoData(t, m, m.byID(id), "queued")

	// An upload in progress: the writer's file under images/ only.
	w, err := os.OpenFile(m.dataFile("queued"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	if got := m.prop("queued", "status"); got != "saving" {
		t.Fatalf("status while writing = %q, want saving", got)
	}
	wantNoData(t, m, m.byID(id), "saving")
	if names := dirNames(t, m.images("queued")); !slices.Contains(names, "image.vhd") {
		t.Errorf("saving: ls images/queued = %v, want image.vhd listed", names)
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%h %s", m.dataFile("queued"))); got != "1 "+strconv.Itoa(len(data)/2) {
		t.Errorf("saving: stat -c '%%h %%s' images/queued/image.vhd = %q, want one link and the staged size", got)
	}
	if _, err := w.Write(data[len(data)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close (seal): %v", err)
	}
	m.checkSealed(t, "queued", fx)
	if got := strings.TrimSpace(run(t, "stat", "-c", "%h", m.byID(id, "image.vhd"))); got != "2" {
		t.Errorf("sealed: by-id/%s/image.vhd has %s links, want 2", id, got)
	}

	// A killed image: no image.vhd under by-id/, an empty, unreadable
	// upload target under images/.
	kid := m.mkimage("killed")
	notVHD := filepath.Join(t.TempDir(), "not.vhd")
	if err := os.WriteFile(notVHD, []byte(strings.Repeat("not a vhd\n", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := execCmd("cp", notVHD, m.dataFile("killed")); r.code == 0 {
		t.Fatalf("cp of a file that is not a VHD exited 0")
	}
	m.checkKilled(t, "killed")
	time.Sleep(20 * time.Millisecond) // the kernel keeps even an uncached entry for a jiffy
	wantNoData(t, m, m.byID(kid), "killed")
	if names := dirNames(t, m.images("killed")); !slices.Contains(names, "image.vhd") {
		t.Errorf("killed: ls images/killed = %v, want image.vhd (the upload target)", names)
	}
	if fd, err := syscall.Open(m.dataFile("killed"), syscall.O_RDONLY, 0); err == nil {
		syscall.Close(fd)
		t.Errorf("killed: images/killed/image.vhd opened for reading")
	} else {
		wantErrno(t, "killed: open images/killed/image.vhd", err, syscall.EACCES)
	}
	// Re-upload into the killed image with cp: it creates image.vhd.
	run(t, "cp", fx.Path, m.dataFile("killed"))
	m.checkSealed(t, "killed", fx)
	if names := dirNames(t, m.byID(kid)); !slices.Contains(names, "image.vhd") {
		t.Errorf("ls by-id/%s after the upload = %v, want image.vhd", kid, names)
	}
}

// TestSealedOpenRdonlyTrunc: open(O_RDONLY|O_TRUNC) of a sealed image.vhd
// is a change like any other: EPERM, root included, through both trees,
// and nothing changes (issue 12 item 7). With ATOMIC_O_TRUNC the flag
// reaches the daemon's Open, which took it for a read.
func TestSealedOpenRdonlyTrunc(t *testing.T) {
	m := mount(t)
	requireTools(t, "cmp")
	fx := makeVHD(t, 2*mib, "fixed")
	id := m.mkimage("trunc")
	run(t, "cp", fx.Path, m.dataFile("trunc"))
	m.checkSealed(t, "trunc", fx)
	for _, p := range []string{m.dataFile("trunc"), m.byID(id, "image.vhd")} {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_TRUNC, 0)
		if err == nil {
			syscall.Close(fd)
		}
		wantErrno(t, "open O_RDONLY|O_TRUNC "+p[len(m.Mnt)+1:], err, syscall.EPERM)
	}
	m.checkSealed(t, "trunc", fx)
	// Unsealed, O_RDONLY|O_TRUNC is a writer too: while another writer
	// has the upload open, EBUSY, and the upload goes on.
	m.mkimage("upload")
	w, err := os.OpenFile(m.dataFile("upload"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(m.dataFile("upload"), syscall.O_RDONLY|syscall.O_TRUNC, 0)
	if err == nil {
		syscall.Close(fd)
	}
	wantErrno(t, "open O_RDONLY|O_TRUNC while a writer has the upload open", err, syscall.EBUSY)
	if got := fileSize(t, m.dataFile("upload")); got != int64(len("partial")) {
		t.Errorf("upload size %d after the refused O_TRUNC, want %d", got, len("partial"))
	}
}
