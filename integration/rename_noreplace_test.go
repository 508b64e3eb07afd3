package integration

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRenameNoReplace (issue 12 item 7): renameat2 with RENAME_NOREPLACE
// in images/ renames to a free name and fails with EEXIST on a taken one,
// also when the taken name is another user's private image that the
// caller cannot see; RENAME_EXCHANGE stays EINVAL. mv -n renames too.
func TestRenameNoReplace(t *testing.T) {
	a := mountAllowOther(t)
	m := a.fsMount
	fx := makeVHD(t, 2*mib, "fixed")
	id := makeImageIn(t, m, "one", "active", fx)
	m.mkimage("two")

	rename := func(from, to string, flags uint) error {
		return unix.Renameat2(unix.AT_FDCWD, m.images(from), unix.AT_FDCWD, m.images(to), flags)
	}
	if err := rename("one", "uno", unix.RENAME_NOREPLACE); err != nil {
		t.Fatalf("renameat2(one, uno, RENAME_NOREPLACE), uno free: %v", err)
	}
	if got := m.prop("uno", "id"); got != id {
		t.Errorf("images/uno has id %s, want %s", got, id)
	}
	wantErrno(t, "renameat2(uno, two, RENAME_NOREPLACE), two taken", rename("uno", "two", unix.RENAME_NOREPLACE), syscall.EEXIST)
	wantErrno(t, "renameat2(uno, two, RENAME_EXCHANGE)", rename("uno", "two", unix.RENAME_EXCHANGE), syscall.EINVAL)
	m.checkSealed(t, "uno", fx)
	if got := m.prop("two", "status"); got != "queued" {
		t.Errorf("images/two: status %q after the refused renames", got)
	}

	// mv -n (no clobber) to a free name.
	run(t, "mv", "-n", m.images("uno"), m.images("eins"))
	if got := m.prop("eins", "id"); got != id {
		t.Errorf("after mv -n: images/eins has id %s, want %s", got, id)
	}

	// A name taken by an image the caller cannot see is taken all the
	// same: mv -n replaces nothing.
	mustAsUser(t, userA, `mkdir "$1"`, m.images("a-private"))
	mustAsUser(t, userB, `mkdir "$1"`, m.images("b-image"))
	mustAsUser(t, userB, `mv -n "$1" "$2"`, m.images("b-image"), m.images("a-private"))
	if got := m.prop("b-image", "owner"); got != userB {
		t.Errorf("images/b-image: owner %q after mv -n onto a hidden name, want %s", got, userB)
	}
	if got := m.prop("a-private", "owner"); got != userA {
		t.Errorf("images/a-private: owner %q after uid 1002's rename, want %s", got, userA)
	}
}
