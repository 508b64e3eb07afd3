package imagesapi

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/imagefs/imagefs/store"
)

// The list's hot path (GET /v2/images over a large catalog): one
// comparator built per request, the page picked without sorting the
// whole catalog, and the page's JSON written directly, byte for byte what
// encoding/json makes of imageJSON's maps (keys sorted, HTML not
// escaped).

// listOrder is the order of a list sorted by keys in dirs (sortSpec's:
// id is always among the keys, so the order is total: no two images
// compare equal).
func listOrder(keys, dirs []string) func(a, b *store.Image) int {
	type keyCmp struct {
		f    func(a, b *store.Image) int
		desc bool
	}
	cs := make([]keyCmp, len(keys))
	for i, k := range keys {
		cs[i] = keyCmp{f: keyComparator(k), desc: dirs[i] == "desc"}
	}
	return func(a, b *store.Image) int {
		for _, c := range cs {
			if r := c.f(a, b); r != 0 {
				if c.desc {
					return -r
				}
				return r
			}
		}
		return 0
	}
}

// keyComparator is compareBy for one key, chosen once.
func keyComparator(key string) func(a, b *store.Image) int {
	switch key {
	case "id":
		return func(a, b *store.Image) int { return cmp.Compare(a.ID, b.ID) }
	case "created_at":
		return func(a, b *store.Image) int { return a.CreatedAt.Compare(b.CreatedAt) }
	case "updated_at":
		return func(a, b *store.Image) int { return a.UpdatedAt.Compare(b.UpdatedAt) }
	case "name":
		return func(a, b *store.Image) int { return cmp.Compare(a.Name, b.Name) }
	case "size":
		return func(a, b *store.Image) int { return cmp.Compare(a.Size, b.Size) }
	}
	return func(a, b *store.Image) int { return compareBy(a, b, key) }
}

// firstN sorts the n first of images in order to the front (the rest in
// no order) and returns them: a page without sorting the whole list. The
// order must be total (listOrder), so the page is the same as that of a
// full sort.
func firstN(images []*store.Image, n int, order func(a, b *store.Image) int) []*store.Image {
	if n <= 0 {
		return images[:0]
	}
	if len(images) <= n || len(images) < 4*n {
		slices.SortFunc(images, order)
		return images[:min(n, len(images))]
	}
	// Keep the n first seen so far, sorted; an image that comes before
	// the last of them replaces it. Images are few per page (at most
	// maxLimit) and most fail the one comparison with the last.
	page := slices.Clone(images[:n])
	slices.SortFunc(page, order)
	for _, im := range images[n:] {
		if order(im, page[n-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, im, order)
		copy(page[i+1:], page[i:n-1])
		page[i] = im
	}
	return page
}

// writeList answers a list page: {"first", "images", "next" (when
// next != ""), "schema"} as writeJSON would of the map.
func (s *Server) writeList(w http.ResponseWriter, first, next string, images []*store.Image) {
	b := make([]byte, 0, 64+len(images)*1200)
	b = append(b, `{"first":`...)
	b = appendJSONString(b, first)
	b = append(b, `,"images":[`...)
	for i, im := range images {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendImageJSON(b, im)
	}
	b = append(b, ']')
	if next != "" {
		b = append(b, `,"next":`...)
		b = appendJSONString(b, next)
	}
	b = append(b, `,"schema":"/v2/schemas/images"}`...)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// imageFields are imageJSON's own keys, sorted (as encoding/json sorts a
// map's keys); an extra property of one of these names is hidden by it.
var imageFields = []string{
	"checksum", "container_format", "created_at", "disk_format", "file", "id",
	"min_disk", "min_ram", "name", "os_hash_algo", "os_hash_value", "os_hidden",
	"owner", "protected", "schema", "self", "size", "status", "tags",
	"updated_at", "virtual_size", "visibility",
}

// appendImageJSON appends im as encoding/json writes imageJSON(im) (with
// SetEscapeHTML(false)): the same bytes.
func (s *Server) appendImageJSON(b []byte, im *store.Image) []byte {
	var extraBuf [16]string
	extras := extraBuf[:0]
	for k := range im.Extra {
		if k == store.KeyMembers || k == store.KeyImportTasks || k == store.KeyStageHost {
			continue // as imageJSON hides them
		}
		if _, fixed := slices.BinarySearch(imageFields, k); fixed {
			continue
		}
		extras = append(extras, k)
	}
	slices.Sort(extras)
	b = append(b, '{')
	first := true
	key := func(k string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, k)
		b = append(b, ':')
	}
	nullable := func(v string) {
		if v == "" {
			b = append(b, "null"...)
		} else {
			b = appendJSONString(b, v)
		}
	}
	size := func(n int64) {
		if n < 0 {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, n, 10)
		}
	}
	e := 0
	for _, f := range imageFields {
		for ; e < len(extras) && extras[e] < f; e++ {
			key(extras[e])
			b = appendJSONString(b, im.Extra[extras[e]])
		}
		key(f)
		switch f {
		case "checksum":
			nullable(im.Checksum)
		case "container_format":
			nullable(im.ContainerFormat)
		case "created_at":
			b = appendGlanceTime(b, im.CreatedAt)
		case "disk_format":
			nullable(im.DiskFormat)
		case "file":
			b = appendJSONString(b, "/v2/images/"+im.ID+"/file")
		case "id":
			b = appendJSONString(b, im.ID)
		case "min_disk":
			b = strconv.AppendInt(b, im.MinDisk, 10)
		case "min_ram":
			b = strconv.AppendInt(b, im.MinRAM, 10)
		case "name":
			b = appendJSONString(b, im.Name)
		case "os_hash_algo":
			nullable(im.OSHashAlgo)
		case "os_hash_value":
			nullable(im.OSHashValue)
		case "os_hidden":
			b = strconv.AppendBool(b, im.Hidden())
		case "owner":
			b = appendJSONString(b, s.ownerOf(im))
		case "protected":
			b = strconv.AppendBool(b, im.Protected)
		case "schema":
			b = append(b, `"/v2/schemas/image"`...)
		case "self":
			b = appendJSONString(b, "/v2/images/"+im.ID)
		case "size":
			size(im.Size)
		case "status":
			b = appendJSONString(b, string(im.Status))
		case "tags":
			b = append(b, '[')
			for i, t := range im.Tags() {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, t)
			}
			b = append(b, ']')
		case "updated_at":
			b = appendGlanceTime(b, im.UpdatedAt)
		case "virtual_size":
			size(im.VirtualSize)
		case "visibility":
			b = appendJSONString(b, string(im.Visibility))
		}
	}
	for ; e < len(extras); e++ {
		key(extras[e])
		b = appendJSONString(b, im.Extra[extras[e]])
	}
	return append(b, '}')
}

// appendGlanceTime appends glanceTime(t) as a JSON string
// ("2006-01-02T15:04:05Z", UTC) without time.Format's layout parsing.
func appendGlanceTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return appendJSONString(b, glanceTime(t))
	}
	hour, minute, sec := t.Clock()
	two := func(b []byte, n int) []byte { return append(b, byte('0'+n/10), byte('0'+n%10)) }
	b = append(b, '"')
	b = two(b, year/100)
	b = two(b, year%100)
	b = append(b, '-')
	b = two(b, int(month))
	b = append(b, '-')
	b = two(b, day)
	b = append(b, 'T')
	b = two(b, hour)
	b = append(b, ':')
	b = two(b, minute)
	b = append(b, ':')
	b = two(b, sec)
	return append(b, 'Z', '"')
}

// appendJSONString appends s as a JSON string as encoding/json does
// without HTML escaping: ", \ and control characters escaped (\b \f \n
// \r \t, else \u00XX), invalid UTF-8 as \ufffd, U+2028 and U+2029
// escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
