package integration

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCacheRecreateWhileOpen: a property removed under by-id/ (or with
// setfattr -x) while a reader still has its file open can be created
// again at once under images/, where the kernel still has its entry. The
// kernel asks for the stale entry's attributes by path (GETATTR without
// a handle) and go-fuse hands the request the reader's handle: answering
// it as an fstat (ENOENT) failed the open with ENOENT; by path the answer
// is ESTALE, which makes the kernel look the name up again and create it.
// (The same race, with the reader's RELEASE still on its way instead of
// an open reader, failed TestCacheRemovedUnderOtherTree's loop.)
func TestCacheRecreateWhileOpen(t *testing.T) {
	m := mount(t)
	id := m.mkimage("img")
	props, byID := m.images("img", "properties"), m.byID(id, "properties")
	if err := os.WriteFile(props+"/j", []byte("v\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		r, err := os.Open(props + "/j")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			err = os.Remove(byID + "/j")
		} else {
			err = unix.Removexattr(m.images("img"), "user.j")
		}
		if err != nil {
			t.Fatal(err)
		}
		v := fmt.Sprintf("v%d\n", i)
		err = os.WriteFile(props+"/j", []byte(v), 0o644)
		r.Close()
		if err != nil {
			t.Fatalf("round %d: creating the property again while a reader has it open: %v", i, err)
		}
		if got := string(readFile(byID + "/j")); got != v {
			t.Fatalf("round %d: %q, want %q", i, got, v)
		}
	}
}
