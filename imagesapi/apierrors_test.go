package imagesapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestStoreErrorsInAPITerms: a refusal the store words for the mount
// (uids, root, image.vhd, shell commands, ids never made) is answered
// with Glance's message for the same refusal, or one in API terms.
func TestStoreErrorsInAPITerms(t *testing.T) {
	e := newEnv(t)
	leaks := []string{"uid ", "root", "image.vhd", "truncate", ": >", "VHD again", "1000", "2000"}
	check := func(what string, code int, b []byte, wantCode int, want string) {
		t.Helper()
		msg := errMessage(t, b)
		if code != wantCode || (want != "" && msg != want) {
			t.Errorf("%s: %d %q, want %d %q", what, code, msg, wantCode, want)
		}
		for _, l := range leaks {
			if strings.Contains(msg, l) {
				t.Errorf("%s: message %q contains %q", what, msg, l)
			}
		}
	}
	// Publicize by a project member.
	body, _ := json.Marshal(map[string]any{"name": "p", "visibility": "public"})
	var pb string
	code, _, b := e.do("alice", "POST", "/v2/images", "application/json", body)
	check("create public", code, b, 403, "You are not authorized to complete publicize_image action.")
	id := e.create("alice", map[string]any{"name": "c", "visibility": "community"})
	code, pb = e.patchCode("alice", id, `[{"op":"replace","path":"/visibility","value":"public"}]`)
	check("patch public", code, []byte(pb), 403, "You are not authorized to complete publicize_image action.")
	// Another project's image it sees.
	code, pb = e.patchCode("bob", id, `[{"op":"replace","path":"/name","value":"x"}]`)
	check("patch by non-owner", code, []byte(pb), 403, "You are not authorized to complete modify_image action.")
	code, _, bb := e.do("bob", "DELETE", "/v2/images/"+id, "", nil)
	check("delete by non-owner", code, bb, 403, "You are not authorized to complete delete_image action.")
	// The owner by a project member.
	code, pb = e.patchCode("alice", id, `[{"op":"replace","path":"/owner","value":"bob"}]`)
	check("patch owner", code, []byte(pb), 403, "")
	// Over the property quota at create: no id of an image never made.
	props := map[string]any{"name": "q", "id": "5c0ffee0-0000-4000-8000-000000000001"}
	for i := 0; i < 200; i++ {
		props[fmt.Sprintf("p%d", i)] = "v"
	}
	body, _ = json.Marshal(props)
	code, _, b2 := e.do("alice", "POST", "/v2/images", "application/json", body)
	check("create over quota", code, b2, 413, "The limit has been exceeded on the number of allowed image properties. Maximum: 128")
	if c, _, _ := e.do("alice", "GET", "/v2/images/5c0ffee0-0000-4000-8000-000000000001", "", nil); c != 404 {
		t.Errorf("the refused create made the image: GET %d", c)
	}
	// An empty upload to a raw image: no VHD, no shell.
	raw := e.create("alice", map[string]any{"name": "r", "disk_format": "raw", "container_format": "bare"})
	code, b3 := e.put("alice", raw, nil)
	check("empty raw upload", code, b3, 400, "The image data is not an acceptable raw disk; the image is killed: the upload was empty (0 bytes)")
}
