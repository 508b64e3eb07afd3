package imagesapi

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/imagefs/imagefs/store"
)

// readOnly are the attributes Glance refuses to set (403 "Attribute 'X'
// is read-only."); reserved are those it refuses as reserved.
var (
	readOnly = map[string]bool{
		"id": true, "status": true, "checksum": true, "os_hash_algo": true, "os_hash_value": true,
		"size": true, "virtual_size": true, "created_at": true, "updated_at": true,
		"self": true, "file": true, "schema": true, "direct_url": true,
		"stores": true, // owner is not: the admin sets it (owner.go)
	}
	reserved = map[string]bool{"deleted": true, "deleted_at": true, "location": true, "locations": true,
		store.KeyMembers: true} // members.go: the members API
)

// image returns the image id as c sees it by id, or answers 404 as
// Glance does for an image the caller may not see.
func (s *Server) image(w http.ResponseWriter, r *http.Request, c store.Caller) *store.Image {
	id := r.PathValue("id")
	im := s.st.GetFor(c, id)
	if im == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("No image found with ID %s", id))
	}
	return im
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	if im := s.image(w, r, c); im != nil {
		writeJSON(w, http.StatusOK, s.imageJSON(im))
	}
}

// list is GET /v2/images: Glance's filters (name, status, visibility,
// owner, size_min, size_max, created_at and updated_at ([OP:]TIME,
// timefilter.go), any other key as property=value; "in:a,b"
// lists for name, status, visibility, owner and properties), sort_key and
// sort_dir (comma lists) or sort=key:dir,..., limit and marker with the
// next link.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	q := r.URL.Query()
	bad := func(msg string) { writeError(w, r, http.StatusBadRequest, msg) }

	limit, msg := listLimit(q.Get("limit"))
	if msg != "" {
		bad(msg)
		return
	}
	keys, dirs, err := sortSpec(q)
	if err != nil {
		bad(err.Error())
		return
	}

	if q.Get("changes-since") != "" {
		bad(`The "changes-since" filter is no longer available on v2.`)
		return
	}
	visibility := q.Get("visibility")
	switch visibility {
	case "", "all", "public", "private", "shared", "community":
	default:
		bad(fmt.Sprintf("Invalid visibility value: %s", visibility))
		return
	}
	var sizeMin, sizeMax int64 = -1, -1
	for _, p := range []struct {
		name string
		v    *int64
	}{{"size_min", &sizeMin}, {"size_max", &sizeMax}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				bad(fmt.Sprintf("Invalid value for %s: %s", p.name, v))
				return
			}
			*p.v = n
		}
	}
	// os_hidden: Glance lists hidden images only with os_hidden=true,
	// and then only those.
	hidden := false
	if q.Has("os_hidden") {
		switch v := strings.ToLower(q.Get("os_hidden")); v {
		case "true", "false":
			hidden = v == "true"
		default:
			bad(fmt.Sprintf("Invalid value '%s' for 'os_hidden' filter. Valid values are 'true' or 'false'.", v))
			return
		}
	}
	// tag (repeatable): the image has every one, as Glance's filter.
	var tags []string
	for _, t := range q["tag"] {
		tags = append(tags, strings.TrimSpace(t))
	}
	memberStatus := store.MemberAccepted // a member lists a shared image it accepted
	switch v := q.Get("member_status"); v {
	case "":
	case "accepted", "pending", "rejected", "all":
		memberStatus = store.MemberStatus(v)
	default:
		bad(fmt.Sprintf("Invalid status: %s", v))
		return
	}
	times, err := timeFilters(q)
	if err != nil {
		bad(err.Error())
		return
	}
	// Property filters: every other key but the paging and sorting ones.
	type filter struct {
		key    string
		values []string
	}
	var filters []filter
	for k, vs := range q {
		switch k {
		case "limit", "marker", "sort_key", "sort_dir", "sort", "visibility", "size_min", "size_max", "member_status", "os_hidden", "tag", store.KeyCreatedAt, store.KeyUpdatedAt:
			continue
		}
		for _, v := range vs {
			values := []string{v}
			if rest, ok := strings.CutPrefix(v, "in:"); ok {
				values = strings.Split(rest, ",")
			}
			if k == "owner" {
				for i, o := range values {
					if uid, ok := s.ownerUID(o); ok {
						values[i] = strconv.FormatUint(uint64(uid), 10)
					}
				}
			}
			filters = append(filters, filter{k, values})
		}
	}

	// By default Glance lists what the caller may list (community
	// images only the owner's); visibility=community and =all list
	// every community image the caller may use by id.
	reach := store.ReachList
	if visibility == "community" || visibility == "all" {
		reach = store.ReachID
	}
	listed := func(im *store.Image) bool {
		if !store.VisibleAs(c, im, reach, memberStatus) {
			return false
		}
		if visibility != "" && visibility != "all" && string(im.Visibility) != visibility {
			return false
		}
		if sizeMin >= 0 && (im.Size < 0 || im.Size < sizeMin) || sizeMax >= 0 && (im.Size < 0 || im.Size > sizeMax) {
			return false
		}
		if im.Hidden() != hidden || !hasTags(im, tags) {
			return false
		}
		for _, f := range times {
			if !f.match(im) {
				return false
			}
		}
		for _, f := range filters {
			v, has := im.Property(f.key)
			if !has || !slices.Contains(f.values, v) {
				return false
			}
		}
		return true
	}
	// The order is total (id is always a key): the images after the
	// marker are those that sort after it, and a page is the first
	// limit of them (listfast.go).
	order := listOrder(keys, dirs)
	all := s.st.ListUnsorted() // sorted below
	var marker *store.Image
	if m := q.Get("marker"); m != "" {
		if i := slices.IndexFunc(all, func(im *store.Image) bool { return im.ID == m }); i >= 0 && listed(all[i]) {
			marker = all[i]
		} else {
			if s.st.GetFor(c, m) == nil {
				// As Glance's image_get_all: 403 for an image the caller
				// may not see, 400 for none.
				if s.st.Get(m) != nil {
					writeError(w, r, http.StatusForbidden, fmt.Sprintf("Forbidding request, image %s not visible", m))
				} else {
					writeError(w, r, http.StatusBadRequest, fmt.Sprintf("No image found with ID %s", m))
				}
				return
			}
			all = nil // the marker is filtered out: nothing follows it
		}
	}
	var images []*store.Image
	for _, im := range all {
		if (marker == nil || order(im, marker) > 0) && listed(im) {
			images = append(images, im)
		}
	}
	next := ""
	if len(images) > limit {
		images = firstN(images, limit, order)
		if limit > 0 {
			next = nextLink(r.URL, images[limit-1].ID)
		}
	} else {
		slices.SortFunc(images, order)
	}
	s.writeList(w, firstLink(r.URL), next, images)
}

func firstLink(u *url.URL) string {
	q := u.Query()
	q.Del("marker")
	if len(q) == 0 {
		return "/v2/images"
	}
	return "/v2/images?" + q.Encode()
}

func nextLink(u *url.URL, marker string) string {
	q := u.Query()
	q.Set("marker", marker)
	return "/v2/images?" + q.Encode()
}

// sortKeys are the keys Glance sorts by (its _available_sort_keys, in
// its order: the order of its error message).
var sortKeys = []string{"name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"}

// sortSpec reads the sort keys and directions of q: sort_key and
// sort_dir (comma lists), or sort=key[:dir],...; default created_at
// desc, with id desc last, as Glance.
func sortSpec(q url.Values) (keys, dirs []string, err error) {
	if v := q.Get("sort"); v != "" {
		if q.Has("sort_key") || q.Has("sort_dir") {
			return nil, nil, errors.New("Old and new sorting syntax cannot be combined")
		}
		for _, part := range strings.Split(v, ",") {
			k, d, _ := strings.Cut(strings.TrimSpace(part), ":")
			if d == "" {
				d = "desc"
			}
			keys, dirs = append(keys, k), append(dirs, d)
		}
	} else {
		for _, k := range q["sort_key"] {
			keys = append(keys, strings.Split(k, ",")...)
		}
		for _, d := range q["sort_dir"] {
			dirs = append(dirs, strings.Split(d, ",")...)
		}
		if len(keys) == 0 {
			keys = []string{"created_at"}
		}
		if len(dirs) > 1 && len(dirs) != len(keys) {
			return nil, nil, errors.New("Number of sort dirs does not match the number of sort keys")
		}
		if len(dirs) == 1 {
			for len(dirs) < len(keys) {
				dirs = append(dirs, dirs[0])
			}
		}
		for len(dirs) < len(keys) {
			dirs = append(dirs, "desc")
		}
	}
	for i, k := range keys {
		if !slices.Contains(sortKeys, k) {
			return nil, nil, fmt.Errorf("Invalid sort key: %s. It must be one of the following: %s.", k, strings.Join(sortKeys, ", "))
		}
		if dirs[i] != "asc" && dirs[i] != "desc" {
			return nil, nil, fmt.Errorf("Invalid sort direction: %s", dirs[i])
		}
	}
	if !slices.Contains(keys, "id") {
		keys, dirs = append(keys, "id"), append(dirs, "desc")
	}
	return keys, dirs, nil
}

func compareBy(a, b *store.Image, key string) int {
	switch key {
	case "name":
		return cmp.Compare(a.Name, b.Name)
	case "status":
		return cmp.Compare(a.Status, b.Status)
	case "size":
		return cmp.Compare(a.Size, b.Size)
	case "virtual_size":
		return cmp.Compare(a.VirtualSize, b.VirtualSize)
	case "id":
		return cmp.Compare(a.ID, b.ID)
	case "created_at":
		return a.CreatedAt.Compare(b.CreatedAt)
	case "updated_at":
		return a.UpdatedAt.Compare(b.UpdatedAt)
	case "visibility":
		return cmp.Compare(a.Visibility, b.Visibility)
	case "owner":
		// by uid, then project (not the project names Glance compares)
		return cmp.Or(cmp.Compare(a.Owner, b.Owner), cmp.Compare(a.OwnerProject, b.OwnerProject))
	case "min_ram":
		return cmp.Compare(a.MinRAM, b.MinRAM)
	case "min_disk":
		return cmp.Compare(a.MinDisk, b.MinDisk)
	case "disk_format":
		return cmp.Compare(a.DiskFormat, b.DiskFormat)
	case "container_format":
		return cmp.Compare(a.ContainerFormat, b.ContainerFormat)
	}
	return 0
}

// settable checks one attribute of a create or a patch against Glance's
// schema and returns its value as the store's string. It answers false
// with Glance's status and message for a read-only, reserved or mistyped
// attribute.
func settable(key string, v any) (string, int, string) {
	switch {
	case key == store.KeyOwner:
		return ownerValue(v) // a system key the admin sets (owner.go)
	case readOnly[key]:
		return "", http.StatusForbidden, fmt.Sprintf("Attribute '%s' is read-only.", key)
	case reserved[key]:
		return "", http.StatusForbidden, fmt.Sprintf("Attribute '%s' is reserved.", key)
	case store.IsSystemKey(key) && !ignoredAtStore[key]:
		return "", http.StatusForbidden, fmt.Sprintf("Attribute '%s' is reserved.", key)
	}
	schemaErr := func(want string) (string, int, string) {
		return "", http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type %s", jsonRepr(v), want)
	}
	switch key {
	case "name":
		s, ok := v.(string)
		if !ok {
			return schemaErr("'string'")
		}
		return s, 0, ""
	case "min_ram", "min_disk":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) {
			return schemaErr("'integer'")
		}
		return strconv.FormatInt(int64(f), 10), 0, ""
	case "protected":
		b, ok := v.(bool)
		if !ok {
			return schemaErr("'boolean'")
		}
		return strconv.FormatBool(b), 0, ""
	case "visibility":
		s, ok := v.(string)
		if !ok || store.ValidValue(store.KeyVisibility, s) != nil {
			return "", http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not one of ['community', 'public', 'private', 'shared']", jsonRepr(v))
		}
		return s, 0, ""
	case "disk_format", "container_format":
		return formatValue(key, v)
	case store.KeyTags:
		l, ok := v.([]any)
		if !ok {
			return schemaErr("'array'")
		}
		tags := make([]string, 0, len(l))
		for _, e := range l {
			t, ok := e.(string)
			if !ok {
				return "", http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type 'string'", jsonRepr(e))
			}
			if msg := tagSchemaErr(t); msg != "" {
				return "", http.StatusBadRequest, msg
			}
			tags = append(tags, t)
		}
		return store.FormatTags(tags), 0, ""
	case store.KeyOSHidden:
		b, ok := v.(bool)
		if !ok {
			return schemaErr("'boolean'")
		}
		return strconv.FormatBool(b), 0, ""
	}
	s, ok := v.(string)
	if !ok {
		return schemaErr("'string'")
	}
	return s, 0, ""
}

// ignoredAtStore are attributes settable accepts that the store does not
// keep: none since the store keeps formats, tags and os_hidden.
var ignoredAtStore = map[string]bool{}

// isBase reports whether key is one of Glance's base attributes of an
// image the store keeps (never removed by a patch; replace needs no
// value before): the core properties and the tags.
func isBase(key string) bool { return store.IsCoreKey(key) || key == store.KeyTags }

func jsonRepr(v any) string {
	switch t := v.(type) {
	case string:
		return "'" + t + "'"
	case nil:
		return "None"
	case bool:
		if t {
			return "True"
		}
		return "False"
	}
	return fmt.Sprint(v)
}

// listLimit parses a list's limit parameter as Glance does (an integer,
// surrounding spaces allowed as Python's int takes them; at most
// maxLimit, also for one past int; defaultLimit when empty): the limit,
// or the 400 message.
func listLimit(v string) (int, string) {
	if v == "" {
		return defaultLimit, ""
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if errors.Is(err, strconv.ErrRange) {
		// An integer past int: Python's int takes it, then the cap (or
		// the sign) applies.
		n, err = maxLimit, nil
		if strings.HasPrefix(strings.TrimSpace(v), "-") {
			n = -1
		}
	}
	if err != nil {
		return 0, "limit param must be an integer"
	}
	if n < 0 {
		return 0, "limit param must be positive"
	}
	return min(n, maxLimit), ""
}
