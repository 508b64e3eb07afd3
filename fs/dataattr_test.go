package fs

import (
	"os"
	"syscall"
	"testing"
)

// TestTruncateByPath: truncate(2) of image.vhd by path is one store
// call (Store.SetDataAttr): it sets the staged size of the upload in
// progress without sealing it (the writer's close seals), changes nothing
// of an image with no upload (size 0) or is EINVAL (another size: the
// image is not killed), and is EPERM on sealed data.
func TestTruncateByPath(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	vhd := fixedVHD(t, 8192)

	// An upload in progress: the writer wrote the VHD and 512 bytes too
	// many; a truncate by path takes them off, and the writer's close
	// seals the VHD.
	m.mkdir("a")
	p := m.path("images", "a", "image.vhd")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	noErr(t, "open for writing", err)
	defer f.Close()
	_, err = f.Write(append(append([]byte{}, vhd...), make([]byte, 512)...))
	noErr(t, "write", err)
	noErr(t, "truncate by path during the upload", syscall.Truncate(p, int64(len(vhd))))
	if st := m.prop("a", "status"); st == "active" || st == "killed" {
		t.Errorf("status %s after a truncate by path during the upload: it sealed", st)
	}
	var sb syscall.Stat_t
	noErr(t, "stat", syscall.Stat(p, &sb))
	if sb.Size != int64(len(vhd)) {
		t.Errorf("size %d after the truncate, want %d", sb.Size, len(vhd))
	}
	noErr(t, "close", f.Close())
	if st := m.prop("a", "status"); st != "active" {
		t.Errorf("status %s after the writer's close, want active", st)
	}
	wantErrno(t, "truncate of sealed data", syscall.Truncate(p, 512), syscall.EPERM)
	wantErrno(t, "chmod of sealed data", os.Chmod(p, 0o644), syscall.EPERM)

	// No upload in progress: nothing to truncate; the image stays queued.
	m.mkdir("b")
	p = m.path("images", "b", "image.vhd")
	noErr(t, "truncate to 0 by path with no upload", syscall.Truncate(p, 0))
	wantErrno(t, "truncate to 4096 by path with no upload", syscall.Truncate(p, 4096), syscall.EINVAL)
	if st := m.prop("b", "status"); st != "queued" {
		t.Errorf("status %s after truncates by path with no upload, want queued", st)
	}
	noErr(t, "chmod before the seal", os.Chmod(p, 0o600))
}
