package integration

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// TestAdminUnprotects (issue 12 item 7): as Glance lets an admin update
// any image's protected flag, root may write protected=false on another
// user's image (and then delete it); other users may not, with or
// without the capabilities that skip the kernel's mode checks.
func TestAdminUnprotects(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-prot", fx)
	writeProp(t, a.fsMount, "a-prot", "visibility", "public")
	A, B, root := a.as(userA), a.as(userB), a.as("0")
	A.must("write", a.propFile("a-prot", "protected"), "true\n")

	B.want("write", a.propFile("a-prot", "protected"), []string{"false\n"}, syscall.EACCES)
	B.withCaps().want("write", a.propFile("a-prot", "protected"), []string{"false\n"}, syscall.EACCES)
	B.withCaps().want("setxattr", a.images("a-prot"), []string{"user.protected", "false"}, syscall.EACCES)
	if got := a.prop("a-prot", "protected"); got != "true" {
		t.Fatalf("protected = %q after uid 1002's attempts, want true", got)
	}
	root.want("rmdir", a.images("a-prot"), nil, syscall.EPERM)

	root.must("write", a.propFile("a-prot", "protected"), "false\n")
	if got := a.prop("a-prot", "protected"); got != "false" {
		t.Fatalf("protected = %q after root wrote false", got)
	}
	root.must("write", a.propFile("a-prot", "protected"), "true\n")
	root.must("setxattr", a.images("a-prot"), "user.protected", "false")
	root.must("rmdir", a.images("a-prot"))
	if _, err := os.Lstat(a.byID(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("by-id/%s after root's rmdir: %v, want ENOENT", id, err)
	}
}
