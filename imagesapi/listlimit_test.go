package imagesapi

import "testing"

// TestListLimitHuge: a limit past int is capped at maxLimit (Glance's
// api_limit_max) as Python's int takes it, not refused; a huge negative
// one is "must be positive".
func TestListLimitHuge(t *testing.T) {
	e := newEnv(t)
	e.create("alice", map[string]any{"name": "a"})
	m := e.json("alice", "GET", "/v2/images?limit=99999999999999999999", nil, 200)
	if imgs, _ := m["images"].([]any); len(imgs) != 1 {
		t.Errorf("limit=99999999999999999999: %v", m)
	}
	code, _, b := e.do("alice", "GET", "/v2/images?limit=-99999999999999999999", "", nil)
	if msg := errMessage(t, b); code != 400 || msg != "limit param must be positive" {
		t.Errorf("limit=-99999999999999999999: %d %q", code, msg)
	}
	if n, msg := listLimit(" 99999999999999999999 "); n != maxLimit || msg != "" {
		t.Errorf("listLimit: %d %q, want %d", n, msg, maxLimit)
	}
}
