package fs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRenameNoReplaceRace: RENAME_NOREPLACE is decided by the store under
// its lock, with the rename: a rename racing a create of its target either
// fails with EEXIST and leaves the target's value, or happens before the
// create (which then fails with EEXIST). Never does the rename replace a
// value created after a check. Same for scratch files.
func TestRenameNoReplaceRace(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("a")
	props := m.path("images", "a", "properties")
	dir := m.path("images", "a")
	bad := 0
	for i := 0; i < 1000 && bad == 0; i++ {
		from := fmt.Sprintf("%s/from%d", props, i)
		to := fmt.Sprintf("%s/to%d", props, i)
		noErr(t, "write from", os.WriteFile(from, []byte("renamed\n"), 0o644))
		var wg sync.WaitGroup
		var rerr, cerr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			rerr = unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
		}()
		go func() {
			defer wg.Done()
			cerr = unix.Setxattr(dir, fmt.Sprintf("user.to%d", i), []byte("created"), unix.XATTR_CREATE)
		}()
		wg.Wait()
		if rerr == nil && cerr == nil {
			t.Errorf("round %d: both the NOREPLACE rename and the create of its target succeeded (value %q)", i, m.prop("a", fmt.Sprintf("to%d", i)))
			bad++
		}
		if rerr != nil && !errors.Is(rerr, syscall.EEXIST) {
			t.Fatalf("round %d: rename: %v", i, rerr)
		}
		if rerr != nil {
			os.Remove(from)
		}
		os.Remove(to)
	}
	// Scratch files: NOREPLACE onto a taken name or image.vhd.
	noErr(t, "create .x.tmp", os.WriteFile(m.path("images", "a", ".x.tmp"), nil, 0o644))
	noErr(t, "create .y.tmp", os.WriteFile(m.path("images", "a", ".y.tmp"), nil, 0o644))
	wantErrno(t, "NOREPLACE onto a scratch file", unix.Renameat2(unix.AT_FDCWD, m.path("images", "a", ".x.tmp"), unix.AT_FDCWD, m.path("images", "a", ".y.tmp"), unix.RENAME_NOREPLACE), syscall.EEXIST)
	wantErrno(t, "NOREPLACE onto image.vhd", unix.Renameat2(unix.AT_FDCWD, m.path("images", "a", ".x.tmp"), unix.AT_FDCWD, m.path("images", "a", "image.vhd"), unix.RENAME_NOREPLACE), syscall.EEXIST)
	noErr(t, "NOREPLACE onto a free name", unix.Renameat2(unix.AT_FDCWD, m.path("images", "a", ".x.tmp"), unix.AT_FDCWD, m.path("images", "a", ".z.tmp"), unix.RENAME_NOREPLACE))
	wantErrno(t, "RENAME_EXCHANGE", unix.Renameat2(unix.AT_FDCWD, m.path("images", "a", ".z.tmp"), unix.AT_FDCWD, m.path("images", "a", ".y.tmp"), unix.RENAME_EXCHANGE), syscall.EINVAL)
}
