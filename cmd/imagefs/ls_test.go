package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sp(s string) *string { return &s }

func TestLsSort(t *testing.T) {
	rows := []lsRow{
		{"name": sp("b"), "id": sp("2"), "size": sp("100")},
		{"name": sp("a"), "id": sp("1"), "size": sp("9")},
		{"name": sp("c"), "id": sp("3"), "size": nil},
		{"name": sp("d"), "id": sp("4"), "size": sp("100")},
	}
	names := func() string {
		var out []string
		for _, r := range rows {
			out = append(out, *r["name"])
		}
		return strings.Join(out, " ")
	}
	sortLsRows(rows, "size", false)
	assert.Equal(t, "a b d c", names(), "numbers as numbers, missing last, ties by name")
	sortLsRows(rows, "size", true)
	assert.Equal(t, "b d a c", names())
	sortLsRows(rows, "name", true)
	assert.Equal(t, "d c b a", names())
}

func TestLsOutput(t *testing.T) {
	cols := []string{"name", "id", "os_distro"}
	rows := []lsRow{
		{"name": sp("superos-2024.1"), "id": sp("da45"), "os_distro": sp("superos")},
		{"name": sp("two\nlines"), "id": sp("0b9e"), "os_distro": nil},
	}
	var b bytes.Buffer
	writeLsTable(&b, cols, rows)
	assert.Equal(t, `+----------------+------+-----------+
| name           | id   | os_distro |
+----------------+------+-----------+
| superos-2024.1 | da45 | superos   |
| two\nlines     | 0b9e |           |
+----------------+------+-----------+
`, b.String())

	b.Reset()
	writeLsJSON(&b, cols, rows)
	var got []map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &got), b.String())
	assert.Equal(t, []map[string]any{
		{"name": "superos-2024.1", "id": "da45", "os_distro": "superos"},
		{"name": "two\nlines", "id": "0b9e", "os_distro": nil},
	}, got)
	assert.True(t, strings.HasPrefix(b.String(), "[\n  {\"name\": \"superos-2024.1\", \"id\""), "columns in order:\n%s", b.String())

	b.Reset()
	writeLsJSON(&b, cols, nil)
	assert.Equal(t, "[]\n", b.String())

	// tags as a list, [] for none; os_hidden a boolean.
	b.Reset()
	writeLsJSON(&b, []string{"name", "tags", "os_hidden"}, []lsRow{
		{"name": sp("a"), "tags": sp("lts\nx86"), "os_hidden": sp("true")},
		{"name": sp("b"), "tags": nil, "os_hidden": sp("false")},
	})
	got = nil
	require.NoError(t, json.Unmarshal(b.Bytes(), &got), b.String())
	assert.Equal(t, []map[string]any{
		{"name": "a", "tags": []any{"lts", "x86"}, "os_hidden": true},
		{"name": "b", "tags": []any{}, "os_hidden": false},
	}, got)
}

func TestLsUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"--property", "novalue", "/mnt"},
		{"--property", "a/b=c", "/mnt"},
		{"--sort", "size:up", "/mnt"},
		{"--column", "", "/mnt"},
	} {
		assert.Equal(t, 2, runLs(args), "%q", args)
	}
	assert.Equal(t, 1, runLs([]string{t.TempDir()}), "not a mount")
}

// TestParseCatalogLine: the direct split and encoding/json agree, and a
// malformed line is an error.
func TestParseCatalogLine(t *testing.T) {
	for _, line := range []string{
		`{"id":"a","name":"x y","size":"2560"}`,
		`{"name":"q\"uote","v":"back\\slash","nl":"a\nb"}`,
		`{}`,
		`{"name":"ünï ✓","e":""}`,
	} {
		got, err := parseCatalogLine([]byte(line))
		require.NoError(t, err, line)
		var want map[string]string
		require.NoError(t, json.Unmarshal([]byte(line), &want))
		assert.Equal(t, want, got, line)
	}
	for _, line := range []string{`{"a":"b"`, `{"a":1}`, `["a"]`, `{"a" "b"}`, ``} {
		_, err := parseCatalogLine([]byte(line))
		assert.Error(t, err, line)
	}
}
