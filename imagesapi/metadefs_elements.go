package imagesapi

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/imagefs/imagefs/store"
)

// The objects, properties and tags of a namespace:
// /v2/metadefs/namespaces/{ns}/objects[/{name}], .../properties[/{name}],
// .../tags[/{name}].

// mdListElements is GET of a collection: objects {"objects": [...],
// "schema"}, properties {"properties": {name: definition}}, tags
// {"tags": [{"name"}]}; objects and tags by created_at, sort_dir desc
// by default; tags take limit and marker (a tag name).
func (s *Server) mdListElements(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("ns")
		q := r.URL.Query()
		dir := cmp.Or(q.Get("sort_dir"), "desc")
		if k != store.MetadefProperties && dir != "asc" && dir != "desc" {
			writeError(w, r, http.StatusBadRequest, "Invalid sort direction: "+dir)
			return
		}
		limit := -1
		if v := q.Get("limit"); v != "" && k != store.MetadefProperties {
			n, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, r, http.StatusBadRequest, "limit param must be an integer")
				return
			}
			if n < 0 || (n == 0 && k == store.MetadefObjects) {
				writeError(w, r, http.StatusBadRequest, "limit param must be positive")
				return
			}
			if n > 0 {
				limit = n
			}
		}
		els, err := s.st.MetadefElements(s.metadefCaller(r), ns, k)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if k == store.MetadefProperties {
			pm := map[string]any{}
			for _, e := range els {
				pm[e.Name] = elementJSON(ns, k, e)
			}
			writeJSON(w, http.StatusOK, map[string]any{"properties": pm})
			return
		}
		// Stored in creation order: desc is that order reversed.
		els = slices.Clone(els)
		slices.SortStableFunc(els, func(a, b store.MetadefElement) int { return a.CreatedAt.Compare(b.CreatedAt) })
		if dir == "desc" {
			slices.Reverse(els)
		}
		if m := q.Get("marker"); m != "" && k == store.MetadefTags {
			i := slices.IndexFunc(els, func(e store.MetadefElement) bool { return e.Name == m })
			if i < 0 {
				s.fail(w, r, fmt.Errorf("%w: the metadata definition tag with name=%s was not found in namespace=%s", store.ErrNotFound, m, ns))
				return
			}
			els = els[i+1:]
		}
		if limit >= 0 && len(els) > limit {
			els = els[:limit]
		}
		l := make([]map[string]any, 0, len(els))
		for _, e := range els {
			if k == store.MetadefTags {
				l = append(l, map[string]any{"name": e.Name})
			} else {
				l = append(l, elementJSON(ns, k, e))
			}
		}
		if k == store.MetadefTags {
			writeJSON(w, http.StatusOK, map[string]any{"tags": l})
			return
		}
		// Glance's objects list names its schema without the leading slash.
		writeJSON(w, http.StatusOK, map[string]any{"objects": l, "schema": "v2/schemas/metadefs/objects"})
	}
}

// elementBody reads and checks the body of an element's create (POST of
// the collection, for objects and properties) or update (PUT).
func elementBody(w http.ResponseWriter, r *http.Request, k store.MetadefKind, create bool) (store.MetadefElement, bool) {
	var e store.MetadefElement
	disallowed := []string{"created_at", "updated_at"}
	if k == store.MetadefObjects {
		disallowed = []string{"self", "schema", "created_at", "updated_at"}
	}
	m, ok := mdBody(w, r, disallowed...)
	if !ok {
		return e, false
	}
	var err error
	switch k {
	case store.MetadefObjects:
		e, err = checkObject(m, true, create)
	case store.MetadefProperties:
		var def map[string]any
		if def, err = checkProperty("property", m, true, true); err == nil {
			e.Name = m["name"].(string)
			e.Body, _ = json.Marshal(def)
		}
	case store.MetadefTags:
		const schema = "tag"
		name, there := m["name"]
		if !there {
			err = &schemaErr{schema, "'name' is a required property"}
			break
		}
		if err = wantString(schema, "name", name, 80); err != nil {
			break
		}
		for key := range m {
			if key != "name" {
				err = &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", key)}
			}
		}
		e.Name = name.(string)
	}
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err.Error())
		return e, false
	}
	return e, true
}

// mdCreateElements is POST of a collection: an object or a property
// (201, the element), or a list of tags {"tags": [{"name"}]} that
// replaces the namespace's tags (added to them with X-Openstack-Append:
// true), 201 {"tags": [{"name"}]}.
func (s *Server) mdCreateElements(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("ns")
		c := s.metadefCaller(r)
		if k != store.MetadefTags {
			e, ok := elementBody(w, r, k, true)
			if !ok {
				return
			}
			out, err := s.st.CreateMetadefElements(c, ns, k, []store.MetadefElement{e}, false)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			writeJSON(w, http.StatusCreated, elementJSON(ns, k, out[0]))
			return
		}
		m, ok := mdBody(w, r, "created_at", "updated_at")
		if !ok {
			return
		}
		var tags []store.MetadefElement
		var err error
		for key, v := range m {
			if key != "tags" {
				err = &schemaErr{"tags", fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", key)}
				break
			}
			tags, err = checkTags("tags", v, true)
		}
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		// As Glance: a list replaces the tags unless appended; an empty
		// list changes nothing.
		replace := len(tags) > 0 && !boolFromString(r.Header.Get("X-Openstack-Append"))
		out, err := s.st.CreateMetadefElements(c, ns, k, tags, replace)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		l := make([]map[string]any, 0, len(out))
		for _, e := range out {
			l = append(l, map[string]any{"name": e.Name})
		}
		writeJSON(w, http.StatusCreated, map[string]any{"tags": l})
	}
}

// boolFromString is oslo's strutils.bool_from_string (not strict):
// 1, t, true, on, y, yes (any case) are true.
func boolFromString(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "on", "y", "yes":
		return true
	}
	return false
}

// mdCreateTag is POST .../tags/{name}: one tag, no body; 201 the tag.
func (s *Server) mdCreateTag(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	c := s.metadefCaller(r)
	// Glance looks the namespace up, then checks the name.
	if _, _, err := s.st.MetadefNamespace(c, ns); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := wantString("tag", "name", name, 80); err != nil {
		s.refuse(w, r, err)
		return
	}
	out, err := s.st.CreateMetadefElements(c, ns, store.MetadefTags, []store.MetadefElement{{Name: name}}, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, elementJSON(ns, store.MetadefTags, out[0]))
}

// mdShowElement is GET .../{kind}/{name}. A property shown with
// ?resource_type=RT is named with that association's prefix, which is
// taken off the name looked up (404 when the name lacks it).
func (s *Server) mdShowElement(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		c := s.metadefCaller(r)
		shown := name
		if rt := r.URL.Query().Get("resource_type"); rt != "" && k == store.MetadefProperties {
			nsRec, _, err := s.st.MetadefNamespace(c, ns)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			i := slices.IndexFunc(nsRec.ResourceTypes, func(a store.MetadefAssociation) bool { return a.Name == rt })
			if i < 0 {
				s.fail(w, r, fmt.Errorf("%w: the metadata definition resource-type association of resource-type=%s to namespace=%s, was not found", store.ErrNotFound, rt, ns))
				return
			}
			p := nsRec.ResourceTypes[i].Prefix
			if p == "" || !strings.HasPrefix(name, p) {
				s.fail(w, r, fmt.Errorf("%w: property %s does not start with the expected resource type association prefix of '%s'", store.ErrNotFound, name, p))
				return
			}
			name = name[len(p):]
		}
		e, err := s.st.MetadefElement(c, ns, k, name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out := elementJSON(ns, k, e)
		if k == store.MetadefProperties {
			out["name"] = shown
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// mdUpdateElement is PUT .../{kind}/{name}: the element replaced by the
// body (its "name" may rename it); 200 the element.
func (s *Server) mdUpdateElement(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		e, ok := elementBody(w, r, k, false)
		if !ok {
			return
		}
		out, err := s.st.UpdateMetadefElement(s.metadefCaller(r), ns, k, name, e)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, elementJSON(ns, k, out))
	}
}

func (s *Server) mdDeleteElement(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.st.DeleteMetadefElement(s.metadefCaller(r), r.PathValue("ns"), k, r.PathValue("name")); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) mdDeleteElements(k store.MetadefKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.st.DeleteMetadefElements(s.metadefCaller(r), r.PathValue("ns"), k); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
