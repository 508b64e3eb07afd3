package imagesapi

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// TestDownloadRanges: the Range header of GET .../file as Glance takes
// it (webob's Range.parse): what it does not parse and a zero-length
// suffix are 416 with "Content-Range: bytes */SIZE"; a range past the
// end too; a valid one 206.
func TestDownloadRanges(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "r"}))
	data := testutil.FixedVHD(t, 1<<20)
	if code, b := e.put("alice", id, data); code != 204 {
		t.Fatalf("upload: %d %s", code, b)
	}
	n := len(data)
	unsat := fmt.Sprintf("bytes */%d", n)
	for _, c := range []struct {
		rng    string
		code   int
		crange string
		body   []byte
	}{
		{"bytes=-0", 416, unsat, nil},
		{"bytes=100-50", 416, unsat, nil},
		{"bytes=abc", 416, unsat, nil}, // Glance: "Invalid Range header."
		{"bytes=-", 416, unsat, nil},
		{fmt.Sprintf("bytes=%d-", n+10), 416, unsat, nil},
		{"bytes=100-199", 206, fmt.Sprintf("bytes 100-199/%d", n), data[100:200]},
		{"bytes=-10", 206, fmt.Sprintf("bytes %d-%d/%d", n-10, n-1, n), data[n-10:]},
		{"bytes=50-50", 206, fmt.Sprintf("bytes 50-50/%d", n), data[50:51]},
	} {
		code, hdr, b := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil, "Range", c.rng)
		if code != c.code || hdr.Get("Content-Range") != c.crange || (c.body != nil && !bytes.Equal(b, c.body)) {
			t.Errorf("Range %s: %d Content-Range %q (%d bytes), want %d %q", c.rng, code, hdr.Get("Content-Range"), len(b), c.code, c.crange)
		}
	}
}
