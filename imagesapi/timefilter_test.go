package imagesapi

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestListTimeFilters: created_at and updated_at filter the list as
// Glance's ([OP:]TIME, ISO 8601, compared at the second); a bad time or
// operator is 400. (They were taken as custom properties: every time
// filter listed nothing.)
func TestListTimeFilters(t *testing.T) {
	e := newEnv(t)
	a := e.create("alice", vhd(map[string]any{"name": "a"}))
	created := e.json("alice", "GET", "/v2/images/"+a, nil, 200)["created_at"].(string)
	at, err := time.Parse(time.RFC3339, created)
	if err != nil {
		t.Fatal(err)
	}
	before := at.Add(-time.Second).Format(time.RFC3339)
	after := at.Add(time.Second).Format(time.RFC3339)
	plusOne := at.In(time.FixedZone("", 3600)).Format(time.RFC3339) // the same instant, +01:00
	ids := func(query string) []string {
		t.Helper()
		m := e.json("alice", "GET", "/v2/images?"+query, nil, 200)
		var out []string
		for _, im := range m["images"].([]any) {
			out = append(out, im.(map[string]any)["id"].(string))
		}
		return out
	}
	for q, want := range map[string]bool{
		"created_at=" + created:                                 true,
		"created_at=eq:" + created:                              true,
		"created_at=eq:" + plusOne:                              true,
		"created_at=neq:" + created:                             false,
		"created_at=gte:" + created:                             true,
		"created_at=gt:" + created:                              false,
		"created_at=gt:" + before:                               true,
		"created_at=lt:" + after:                                true,
		"created_at=lte:" + before:                              false,
		"created_at=lt:" + created:                              false,
		"updated_at=gte:" + before:                              true,
		"updated_at=lt:" + before:                               false,
		"created_at=gte:" + at.Format("2006-01-02"):             true,
		"created_at=gte:" + before + "&created_at=lte:" + after: true,
	} {
		if got := slices.Contains(ids(strings.ReplaceAll(q, "+", "%2B")), a); got != want {
			t.Errorf("%s: listed %v, want %v", q, got, want)
		}
	}
	for _, q := range []string{"created_at=gte:yesterday", "updated_at=abc", "created_at=after:" + created} {
		if code, _, b := e.do("alice", "GET", "/v2/images?"+q, "", nil); code != 400 {
			t.Errorf("%s: %d, want 400: %s", q, code, b)
		}
	}
}
