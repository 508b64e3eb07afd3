package fs

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestXattrRemoveOutsideUser: removexattr of a name outside user.* is
// EOPNOTSUPP, as getxattr and setxattr (README's error table), on the
// image directory and on image.vhd.
func TestXattrRemoveOutsideUser(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.upload("a", fixedVHD(t, 8192))
	for _, p := range []string{m.path("images", "a"), m.path("images", "a", "image.vhd")} {
		for _, name := range []string{"trusted.x", "security.selinux", "system.posix_acl_access"} {
			wantErrno(t, "removexattr "+name+" of "+p, unix.Removexattr(p, name), syscall.EOPNOTSUPP)
		}
	}
}

// TestRenameCrossDirectory: a rename between two directories of the
// mount is EPERM wherever it happens (not EXDEV: mv would copy, and a copy
// into an image directory is an upload), and image.vhd and properties
// keep their names (EPERM).
func TestRenameCrossDirectory(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("a")
	m.mkdir("b")
	noErr(t, "write a property", os.WriteFile(m.path("images", "a", "properties", "k"), []byte("v\n"), 0o644))
	noErr(t, "create a scratch file", os.WriteFile(m.path("images", "a", ".x.tmp"), nil, 0o644))
	for _, c := range []struct{ from, to string }{
		{m.path("images", "a", "properties", "k"), m.path("images", "a", "k")},
		{m.path("images", "a", "properties", "k"), m.path("images", "b", "properties", "k")},
		{m.path("images", "a", ".x.tmp"), m.path("images", "b", ".x.tmp")},
		{m.path("images", "a", ".x.tmp"), m.path("images", "a", "properties", "x")},
		{m.path("images", "a"), m.path("images", "b", "a")},
	} {
		wantErrno(t, "rename "+c.from+" "+c.to, os.Rename(c.from, c.to), syscall.EPERM)
	}
	if v := m.prop("a", "k"); v != "v" {
		t.Errorf("k = %q after the refused renames, want v", v)
	}
	wantErrno(t, "rename of image.vhd", os.Rename(m.path("images", "a", "image.vhd"), m.path("images", "a", "x")), syscall.EPERM)
}
