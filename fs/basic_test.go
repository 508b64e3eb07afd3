package fs

import (
	"bytes"
	"os"
	"testing"
)

// TestMountUploadRead: the smallest round trip through the harness.
func TestMountUploadRead(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	data := fixedVHD(t, 64<<10)
	m.upload("a", data)
	got, err := os.ReadFile(m.path("images", "a", "image.vhd"))
	noErr(t, "read", err)
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, differ from the %d uploaded", len(got), len(data))
	}
}
