package imagesapi

import (
	"strings"
	"testing"
)

// TestJSONNotUTF8 is 400 "Malformed JSON in request body.", as Glance's
// strict decode, and creates or changes nothing (encoding/json took each
// bad byte as U+FFFD: the image was created under another name).
func TestJSONNotUTF8(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "ok"}))
	for _, c := range []struct{ method, path, ctype, body string }{
		{"POST", "/v2/images", "application/json", "{\"name\":\"bad\xff\xfe\"}"},
		{"PATCH", "/v2/images/" + id, patchV21, "[{\"op\":\"add\",\"path\":\"/os_distro\",\"value\":\"x\xc3\"}]"},
		{"POST", "/v2/images/" + id + "/members", "application/json", "{\"member\":\"p\xff\"}"},
	} {
		code, _, b := e.do("alice", c.method, c.path, c.ctype, []byte(c.body))
		if code != 400 || !strings.Contains(string(b), "Malformed JSON in request body.") {
			t.Errorf("%s %s: %d %s, want 400 Malformed JSON", c.method, c.path, code, b)
		}
	}
	m := e.json("alice", "GET", "/v2/images", nil, 200)
	if n := len(m["images"].([]any)); n != 1 {
		t.Errorf("%d images listed, want 1: %v", n, m)
	}
	if im := e.json("alice", "GET", "/v2/images/"+id, nil, 200); im["os_distro"] != nil {
		t.Errorf("os_distro set: %v", im["os_distro"])
	}
}
