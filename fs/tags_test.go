package fs

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTagsFile: properties/tags is the tag set, one per line, sorted;
// writing it replaces the set (checked at the write: EINVAL for a bad
// tag, ENOSPC past the tag quota; nothing half-changed); removing it
// clears the set; user.tags is the same value.
func TestTagsFile(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.upload("a", fixedVHD(t, 1<<20))
	tags := m.path("images", "a", "properties", "tags")
	_, err := os.Stat(tags)
	wantErrno(t, "stat tags of an image without tags", err, syscall.ENOENT)

	noErr(t, "write tags", writeFile(tags, []byte("x86\nlts\n\nx86\n")))
	if got := m.prop("a", "tags"); got != "lts\nx86" {
		t.Fatalf("tags file: %q, want lts, x86", got)
	}
	if got := m.st.Get(id).Tags(); strings.Join(got, ",") != "lts,x86" {
		t.Fatalf("store: %v", got)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(m.path("images", "a"), "user.tags", buf)
	noErr(t, "getxattr user.tags", err)
	if string(buf[:n]) != "lts\nx86" {
		t.Fatalf("user.tags = %q", buf[:n])
	}

	before := m.st.Get(id)
	wantErrno(t, "a 256-character tag", writeFile(tags, []byte("ok\n"+strings.Repeat("x", 256)+"\n")), syscall.EINVAL)
	var many strings.Builder
	for i := range 129 {
		fmt.Fprintf(&many, "t%03d\n", i)
	}
	wantErrno(t, "129 tags", writeFile(tags, []byte(many.String())), syscall.ENOSPC)
	wantErrno(t, "setxattr of a tag with a tab", unix.Setxattr(m.path("images", "a"), "user.tags", []byte("a\tb"), 0), syscall.EINVAL)
	if m.st.Get(id) != before {
		t.Fatal("a refused tags write changed the image")
	}
	if got := m.prop("a", "tags"); got != "lts\nx86" {
		t.Fatalf("tags file after refused writes: %q", got)
	}

	// Appending adds a tag; removing the file clears the set.
	f, err := os.OpenFile(tags, os.O_WRONLY|os.O_APPEND, 0)
	noErr(t, "open for append", err)
	_, err = f.WriteString("beta\n")
	noErr(t, "append", err)
	noErr(t, "close", f.Close())
	if got := m.prop("a", "tags"); got != "beta\nlts\nx86" {
		t.Fatalf("after append: %q", got)
	}
	noErr(t, "setxattr user.tags", unix.Setxattr(m.path("images", "a", "image.vhd"), "user.tags", []byte("z\ny"), 0))
	if got := m.prop("a", "tags"); got != "y\nz" {
		t.Fatalf("after setxattr: %q", got)
	}
	noErr(t, "rm tags", os.Remove(tags))
	if got := m.st.Get(id).Tags(); len(got) != 0 {
		t.Fatalf("after rm: %v", got)
	}
	_, err = os.Stat(tags)
	wantErrno(t, "stat tags after rm", err, syscall.ENOENT)
}

// TestByTagView: by-tag/<tag>/<name> -> ../../by-id/<id>, kept current:
// a tag removed, an image renamed, a tag's last image gone.
func TestByTagView(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	ida := m.upload("a", fixedVHD(t, 1<<20))
	m.mkdir("b")
	noErr(t, "tags a", writeFile(m.path("images", "a", "properties", "tags"), []byte("x86\na/b\n")))
	noErr(t, "tags b", writeFile(m.path("images", "b", "properties", "tags"), []byte("x86\n")))

	wantNames(t, m.path("by-tag"), "a%2Fb", "x86")
	wantNames(t, m.path("by-tag", "x86"), "a", "b")
	link := m.path("by-tag", "x86", "a")
	target, err := os.Readlink(link)
	noErr(t, "readlink", err)
	if target != "../../by-id/"+ida {
		t.Fatalf("link target %q", target)
	}
	b, err := os.ReadFile(link + "/properties/name")
	noErr(t, "read through the link", err)
	if string(b) != "a\n" {
		t.Fatalf("through the link: %q", b)
	}
	if _, err := os.Lstat(m.path("by-tag", "a%2Fb", "a")); err != nil {
		t.Fatalf("escaped tag: %v", err)
	}
	// Not a by-property key.
	_, err = os.Stat(m.path("by-property", "tags"))
	wantErrno(t, "by-property/tags", err, syscall.ENOENT)
	for _, k := range names(t, m.path("by-property")) {
		if k == "tags" {
			t.Fatal("by-property lists tags")
		}
	}

	// Removing a tag: the link goes at once (the kernel had it cached).
	noErr(t, "retag a", writeFile(m.path("images", "a", "properties", "tags"), []byte("x86\n")))
	_, err = os.Lstat(m.path("by-tag", "a%2Fb", "a"))
	wantErrno(t, "lstat by-tag/a%2Fb/a after the tag went", err, syscall.ENOENT)
	_, err = os.Lstat(m.path("by-tag", "a%2Fb"))
	wantErrno(t, "lstat by-tag/a%2Fb after its last image left", err, syscall.ENOENT)
	// A rename: the link follows the name.
	noErr(t, "rename", os.Rename(m.path("images", "a"), m.path("images", "c")))
	_, err = os.Lstat(link)
	wantErrno(t, "lstat by-tag/x86/a after the rename", err, syscall.ENOENT)
	wantNames(t, m.path("by-tag", "x86"), "b", "c")
	wantErrno(t, "unlink a tag link", syscall.Unlink(m.path("by-tag", "x86", "b")), syscall.EPERM)
	wantErrno(t, "rmdir a tag dir", syscall.Rmdir(m.path("by-tag", "x86")), syscall.EPERM)
	// Deletes: the tag's directory goes with its last image.
	noErr(t, "rmdir c", syscall.Rmdir(m.path("images", "c")))
	noErr(t, "rm b's tags", os.Remove(m.path("images", "b", "properties", "tags")))
	_, err = os.Lstat(m.path("by-tag", "x86"))
	wantErrno(t, "lstat by-tag/x86 with no image", err, syscall.ENOENT)
	wantNames(t, m.path("by-tag"))
}

// TestOSHiddenFile: properties/os_hidden is true or false (default
// false), set by writing it; a hidden image stays listed under images/
// (the mount is the operator's view; hiding is the API's listing choice)
// and shows in by-property/os_hidden/true/.
func TestOSHiddenFile(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("h")
	if got := m.prop("h", "os_hidden"); got != "false" {
		t.Fatalf("os_hidden = %q, want false", got)
	}
	hidden := m.path("images", "h", "properties", "os_hidden")
	wantErrno(t, "os_hidden=maybe", writeFile(hidden, []byte("maybe\n")), syscall.EINVAL)
	wantErrno(t, "rm os_hidden", os.Remove(hidden), syscall.EPERM)
	noErr(t, "hide", writeFile(hidden, []byte("true\n")))
	if got := m.prop("h", "os_hidden"); got != "true" {
		t.Fatalf("os_hidden = %q after writing true", got)
	}
	wantNames(t, m.path("images"), "h")
	wantNames(t, m.path("by-property", "os_hidden", "true"), "h")
	n := 0
	for _, k := range names(t, m.path("images", "h", "properties")) {
		if k == "os_hidden" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("properties/ lists os_hidden %d times", n)
	}
}

// TestViewAfterPropertyRm: after rm of a property file, the views it
// empties are gone at once. The entry of the removed file is dropped
// after the reply (the kernel holds properties/ for the unlink); that
// notification once queued the views' ones behind it, past the unlink's
// reply (7 failures in 10 runs).
func TestViewAfterPropertyRm(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("a")
	noErr(t, "write", writeFile(m.path("images", "a", "properties", "os_distro"), []byte("x\n")))
	noErr(t, "write", writeFile(m.path("images", "a", "properties", "tags"), []byte("x\n")))
	for _, p := range []string{"by-property/os_distro/x/a", "by-tag/x/a"} {
		_, err := os.Lstat(m.path(p))
		noErr(t, "lstat "+p, err)
	}
	for p, key := range map[string]string{"by-property/os_distro": "os_distro", "by-tag/x": "tags"} {
		noErr(t, "rm "+key, os.Remove(m.path("images", "a", "properties", key)))
		_, err := os.Lstat(m.path(p))
		wantErrno(t, "lstat "+p+" after rm", err, syscall.ENOENT)
	}
}
