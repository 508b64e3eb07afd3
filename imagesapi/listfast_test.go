package imagesapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/imagefs/imagefs/store"
)

// TestAppendJSONString: the same bytes as encoding/json without HTML
// escaping, for every kind of character it treats apart.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "<tag> & amp", "tab\tnl\nr\rb\bf\f", "\x00\x01\x1f\x7f",
		"é ü 日本語 🙂", "line\u2028para\u2029", "bad \xff utf-8 \xc3", "\xed\xa0\x80 surrogate", strings.Repeat("x", 300),
	} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(appendJSONString(nil, s)); got != want {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}

// TestAppendGlanceTime: glanceTime's text, quoted.
func TestAppendGlanceTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 12, 7, 9, 5, 3, 999999999, time.UTC), time.Date(1999, 1, 31, 23, 59, 59, 0, time.FixedZone("x", -5*3600)),
		time.Date(5, 2, 3, 4, 5, 6, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), {},
		time.Now(),
	} {
		if got, want := string(appendGlanceTime(nil, tm)), `"`+glanceTime(tm)+`"`; got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
	}
}

// listResponseMaps is what the list answered before listfast.go: writeJSON
// of the map with imageJSON's maps.
func (s *Server) listResponseMaps(first, next string, images []*store.Image) []byte {
	out := map[string]any{"schema": "/v2/schemas/images", "first": first}
	if next != "" {
		out["next"] = next
	}
	list := make([]map[string]any, 0, len(images))
	for _, im := range images {
		list = append(list, s.imageJSON(im))
	}
	out["images"] = list
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusOK, out)
	return rec.Body.Bytes()
}

// TestListJSONAsMaps: writeList's bytes are those of the maps' encoding,
// for images with extra properties sorting before, between and after the
// fixed fields, tags, members, hidden, a project owner, sealed and not.
func TestListJSONAsMaps(t *testing.T) {
	e := newEnv(t)
	h, err := New(e.st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000}})
	if err != nil {
		t.Fatal(err)
	}
	alice := store.Caller{UID: 1000, GID: 1000, Project: "alice"}
	mk := func(c store.Caller, name string, kv ...store.KeyValue) *store.Image {
		t.Helper()
		im, err := e.st.CreateWithID(c, uuid.NewString(), name, kv)
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	mk(store.Root, "plain")
	mk(alice, "extras", store.KeyValue{Key: "aaa", Value: "first"}, store.KeyValue{Key: "hw_disk_bus", Value: "scsi"},
		store.KeyValue{Key: "os_distro", Value: "superos <1> & \"2\" é \u2028"}, store.KeyValue{Key: "zzz", Value: "last"},
		store.KeyValue{Key: "n", Value: "between name and os_hash"}, store.KeyValue{Key: "owner_x", Value: "after owner"},
		store.KeyValue{Key: store.KeyDiskFormat, Value: "raw"}, store.KeyValue{Key: store.KeyContainerFormat, Value: "bare"},
		store.KeyValue{Key: store.KeyVisibility, Value: "shared"})
	tagged := mk(alice, "tagged", store.KeyValue{Key: store.KeyTags, Value: "b\na\nlts"}, store.KeyValue{Key: store.KeyOSHidden, Value: "true"},
		store.KeyValue{Key: store.KeyDiskFormat, Value: "raw"}, store.KeyValue{Key: store.KeyContainerFormat, Value: "bare"},
		store.KeyValue{Key: store.KeyVisibility, Value: "shared"})
	e.json("alice", "POST", "/v2/images/"+tagged.ID+"/members", map[string]any{"member": "bob"}, 200)
	// A sealed image: checksum, hashes, sizes.
	sealed := e.json("", "POST", "/v2/images", map[string]any{"name": "sealed", "disk_format": "raw", "container_format": "bare", "min_ram": 512}, 201)
	if code, _, b := e.do("", "PUT", "/v2/images/"+sealed["id"].(string)+"/file", "application/octet-stream", make([]byte, 4096)); code != 204 {
		t.Fatalf("upload: %d %s", code, b)
	}

	// An owner that is a project no uid maps, and a staged image (its
	// stage host and import bookkeeping are hidden).
	mk(store.Root, "projected", store.KeyValue{Key: store.KeyOwner, Value: "0f3cproject"})
	staged := e.json("", "POST", "/v2/images", map[string]any{"name": "staged", "disk_format": "raw", "container_format": "bare"}, 201)
	if code, _, b := e.do("", "PUT", "/v2/images/"+staged["id"].(string)+"/stage", "application/octet-stream", make([]byte, 4096)); code != 204 {
		t.Fatalf("stage: %d %s", code, b)
	}

	images := e.st.ListUnsorted()
	if len(images) != 6 {
		t.Fatalf("%d images", len(images))
	}
	for _, im := range images {
		want, _ := json.Marshal(h.imageJSON(im)) // (HTML-escaped: compared below without)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(h.imageJSON(im))
		got := h.appendImageJSON(nil, im)
		if string(got) != strings.TrimSuffix(buf.String(), "\n") {
			t.Errorf("image %s:\n got %s\nwant %s", im.Name, got, buf.String())
		}
		if !json.Valid(got) || len(want) == 0 {
			t.Errorf("image %s: not JSON: %s", im.Name, got)
		}
	}
	for _, next := range []string{"", "/v2/images?limit=2&marker=" + images[1].ID} {
		rec := httptest.NewRecorder()
		h.writeList(rec, "/v2/images?limit=2&os_distro=a%26b", next, images)
		if want := h.listResponseMaps("/v2/images?limit=2&os_distro=a%26b", next, images); !bytes.Equal(rec.Body.Bytes(), want) {
			t.Errorf("list (next %q):\n got %s\nwant %s", next, rec.Body.Bytes(), want)
		}
		if rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) || rec.Header().Get("Content-Type") != "application/json; charset=UTF-8" {
			t.Errorf("headers: %v", rec.Header())
		}
	}
	rec := httptest.NewRecorder()
	h.writeList(rec, "/v2/images", "", nil)
	if want := h.listResponseMaps("/v2/images", "", nil); !bytes.Equal(rec.Body.Bytes(), want) {
		t.Errorf("empty list: %s, want %s", rec.Body.Bytes(), want)
	}
}

// TestListOrderAsStableSort: every page of every walk is what the list
// answered before listfast.go (a stable sort of the name-sorted catalog
// by the sort keys, then the page after the marker), over a catalog
// whose images tie on every key but id (created in the same second, a
// few names, sizes and statuses), for sort keys and directions in both
// syntaxes, limits that split it unevenly, and filters.
func TestListOrderAsStableSort(t *testing.T) {
	e := newEnv(t)
	const n = 240
	for i := range n {
		kv := []store.KeyValue{
			{Key: store.KeyDiskFormat, Value: []string{"vhd", "raw"}[i%2]}, {Key: store.KeyContainerFormat, Value: "bare"},
			{Key: store.KeyVisibility, Value: "public"}, {Key: "os_version", Value: strconv.Itoa(i % 3)},
		}
		im, err := e.st.CreateWithID(store.Root, uuid.NewString(), fmt.Sprintf("img-%03d", i%97*7%240), kv)
		if err != nil {
			// names repeat (i%97*7): unique is what the store wants; a
			// taken one gets a suffix.
			if im, err = e.st.CreateWithID(store.Root, uuid.NewString(), fmt.Sprintf("img-%03d-%d", i%97*7%240, i), kv); err != nil {
				t.Fatal(err)
			}
		}
		if i%40 == 1 { // a few sealed (raw), two sizes
			data := make([]byte, 512*(1+i%80/40))
			if code, _, b := e.do("", "PUT", "/v2/images/"+im.ID+"/file", "application/octet-stream", data); code != 204 {
				t.Fatalf("upload: %d %s", code, b)
			}
		}
	}
	h, err := New(e.st, Options{Auth: AuthNoAuth})
	if err != nil {
		t.Fatal(err)
	}
	// want is the former list: stable sort of store.List() (by name).
	want := func(q url.Values) [][]string {
		keys, dirs, err := sortSpec(q)
		if err != nil {
			t.Fatal(err)
		}
		var all []*store.Image
		for _, im := range e.st.List() {
			if v := q.Get("os_version"); v != "" {
				if got, _ := im.Property("os_version"); got != v {
					continue
				}
			}
			all = append(all, im)
		}
		slices.SortStableFunc(all, func(a, b *store.Image) int {
			for i, k := range keys {
				if c := compareBy(a, b, k); c != 0 {
					if dirs[i] == "desc" {
						return -c
					}
					return c
				}
			}
			return 0
		})
		limit, _ := strconv.Atoi(q.Get("limit"))
		var pages [][]string
		for len(all) > 0 {
			var page []string
			for _, im := range all[:min(limit, len(all))] {
				page = append(page, im.ID)
			}
			pages = append(pages, page)
			all = all[min(limit, len(all)):]
		}
		return pages
	}
	got := func(q url.Values) [][]string {
		var pages [][]string
		path := "/v2/images?" + q.Encode()
		for path != "" && len(pages) <= n {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if rec.Code != 200 {
				t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
			}
			var p struct {
				Images []struct{ ID string }
				Next   string
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			var page []string
			for _, im := range p.Images {
				page = append(page, im.ID)
			}
			if len(page) > 0 {
				pages = append(pages, page)
			}
			path = p.Next
		}
		return pages
	}
	for _, spec := range []string{
		"", "sort_key=name", "sort_key=name&sort_dir=asc", "sort_key=status&sort_key=size&sort_dir=asc&sort_dir=desc",
		"sort_key=disk_format,created_at&sort_dir=asc", "sort=size:asc,name", "sort=container_format,updated_at:asc",
		"sort_key=id&sort_dir=asc", "sort=id,name:asc", "sort_key=created_at&sort_dir=asc",
	} {
		for _, extra := range []string{"limit=1", "limit=7", "limit=50", "limit=60", "limit=1000", "limit=13&os_version=1"} {
			q, _ := url.ParseQuery(spec + "&" + extra)
			q.Del("")
			w, g := want(q), got(q)
			if !slices.EqualFunc(w, g, slices.Equal) {
				t.Errorf("%s&%s: pages differ from the stable sort's (%d and %d pages)", spec, extra, len(g), len(w))
			}
		}
	}
}

// BenchmarkAPIList10k: the walk of the bench's api section (GET
// /v2/images?os_distro=superos&limit=1000, next links followed) over
// 10,000 images, through the handler (no socket); ms/page.
func BenchmarkAPIList10k(b *testing.B) {
	const n = 10000
	st, err := store.Open(b.TempDir(), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range n {
		if _, err := st.CreateWithID(store.Root, uuid.NewString(), fmt.Sprintf("list-%06d", i), []store.KeyValue{
			{Key: store.KeyDiskFormat, Value: "vhd"}, {Key: store.KeyContainerFormat, Value: "bare"},
			{Key: store.KeyVisibility, Value: "public"},
			{Key: "os_distro", Value: "superos"}, {Key: "os_version", Value: strconv.Itoa(i % 10)}, {Key: "hw_disk_bus", Value: "scsi"},
		}); err != nil {
			b.Fatal(err)
		}
	}
	h, err := New(st, Options{Auth: AuthNoAuth})
	if err != nil {
		b.Fatal(err)
	}
	pages := 0
	for b.Loop() {
		path := "/v2/images?os_distro=superos&limit=1000"
		for path != "" {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if rec.Code != 200 {
				b.Fatalf("%d", rec.Code)
			}
			path = ""
			body := rec.Body.Bytes()
			if i := bytes.LastIndex(body, []byte(`"next":"`)); i >= 0 {
				rest := body[i+len(`"next":"`):]
				path = string(rest[:bytes.IndexByte(rest, '"')])
			}
			pages++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(pages), "ms/page")
}
