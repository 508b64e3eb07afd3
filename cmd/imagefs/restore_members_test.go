package main

import "testing"

// TestRestoredMembers: a restore writes a shared image's backed-up
// members as ids (pending again: the store lets the owner set no
// status), whatever format the backup has; none for another visibility
// (only a shared image has members).
func TestRestoredMembers(t *testing.T) {
	for _, c := range []struct {
		visibility, members, want string
	}{
		{"shared", "1002 accepted 2026-12-07T17:00:00Z 2026-12-07T17:05:00Z\n0f3c9a2e pending 2026-12-07T17:01:00Z 2026-12-07T17:01:00Z", "1002\n0f3c9a2e"},
		{"shared", "1002\n1003", "1002\n1003"}, // an earlier imagefs's backup
		{"shared", "", ""},
		{"private", "1002 accepted 2026-12-07T17:00:00Z 2026-12-07T17:05:00Z", ""},
	} {
		got := restoredMembers(map[string]string{"visibility": c.visibility, "members": c.members})
		if got != c.want {
			t.Errorf("%s %q: %q, want %q", c.visibility, c.members, got, c.want)
		}
	}
}
