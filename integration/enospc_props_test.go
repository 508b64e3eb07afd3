package integration

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestENOSPCPropertyShell: on a store with less free space than a catalog
// commit needs (8 MiB), `echo 2048 > properties/min_ram` from bash
// fails with "No space left on device" and the value stays; so does echo
// into a new key, which is not created. A shell ignores errors of close,
// so the refusal must come at the write (it used to come only at the
// close: echo exited 0 and the change was lost). With space back, the
// same echo works.
func TestENOSPCPropertyShell(t *testing.T) {
	embeddedCatalogOnly(t, "a property commit needs free space on the embedded catalog's disk; an etcd catalog has its own (its NOSPACE alarm)")
	m := mount(t)
	tmpfsStore(t, m, "64m")
	m.mkimage("img")
	fill := fillDisk(t, m.Store, 4*mib)
	t.Logf("%d bytes free", freeBytes(t, m.Store))

	r := bashErr(`echo 2048 > "$1"`, m.propFile("img", "min_ram"))
	if r.code == 0 || !strings.Contains(r.stderr, "No space left on device") {
		t.Errorf("echo 2048 > properties/min_ram on a nearly full store: want No space left on device, got %s", r)
	}
	if got := m.prop("img", "min_ram"); got != "0" {
		t.Errorf("min_ram = %q after the refused echo, want 0", got)
	}
	r = bashErr(`echo v > "$1"`, m.propFile("img", "new_key"))
	if r.code == 0 || !strings.Contains(r.stderr, "No space left on device") {
		t.Errorf("echo v > properties/new_key on a nearly full store: want No space left on device, got %s", r)
	}
	if _, err := os.Stat(m.propFile("img", "new_key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new_key after the refused echo: %v", err)
	}

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	sh(t, `echo 2048 > "$1"`, m.propFile("img", "min_ram"))
	sh(t, `echo v > "$1"`, m.propFile("img", "new_key"))
	if got := m.prop("img", "min_ram"); got != "2048" {
		t.Errorf("min_ram = %q with space back, want 2048", got)
	}
	if got := m.prop("img", "new_key"); got != "v" {
		t.Errorf("new_key = %q with space back, want v", got)
	}
}
