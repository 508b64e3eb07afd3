package imagesapi

import (
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/imagefs/imagefs/store"
)

// The metadata definitions API (Glance's /v2/metadefs and
// /v2/schemas/metadefs/*): namespaces, their resource type associations,
// objects, properties and tags, and the resource types. A thin face over
// the store's metadefs calls (store/metadefs.go), which hold every rule
// (admins change, visibility, protected, unique names, limits); here:
// Glance's request checks (its JSON schemas), its JSON shapes and its
// status codes.

// metadefSchemas are Glance 25.1's schemas, as its code generates them
// (glance/api/v2/metadef_*.py get_schema and get_collection_schema),
// served as they are by GET /v2/schemas/metadefs/{name}.
//
//go:embed metadefschemas/*.json
var metadefSchemas embed.FS

func (s *Server) metadefRoutes(m *http.ServeMux) {
	for _, n := range []string{"namespace", "namespaces", "resource_type", "resource_types", "object", "objects", "property", "properties", "tag", "tags"} {
		b, err := metadefSchemas.ReadFile("metadefschemas/" + n + ".json")
		if err != nil {
			panic(err) // embedded: present by construction
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			panic(fmt.Sprintf("metadefschemas/%s.json: %v", n, err))
		}
		m.HandleFunc("GET /v2/schemas/metadefs/"+n, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, v) })
	}
	const ns = "/v2/metadefs/namespaces/{ns}"
	m.HandleFunc("GET /v2/metadefs/resource_types", s.mdResourceTypes)
	m.HandleFunc("GET /v2/metadefs/namespaces", s.mdListNamespaces)
	m.HandleFunc("POST /v2/metadefs/namespaces", s.mdCreateNamespace)
	m.HandleFunc("GET "+ns, s.mdShowNamespace)
	m.HandleFunc("PUT "+ns, s.mdUpdateNamespace)
	m.HandleFunc("DELETE "+ns, s.mdDeleteNamespace)
	m.HandleFunc("GET "+ns+"/resource_types", s.mdListAssociations)
	m.HandleFunc("POST "+ns+"/resource_types", s.mdAssociate)
	m.HandleFunc("DELETE "+ns+"/resource_types/{name}", s.mdDissociate)
	for _, k := range []store.MetadefKind{store.MetadefObjects, store.MetadefProperties, store.MetadefTags} {
		coll := ns + "/" + collectionName(k)
		m.HandleFunc("GET "+coll, s.mdListElements(k))
		m.HandleFunc("POST "+coll, s.mdCreateElements(k))
		m.HandleFunc("DELETE "+coll, s.mdDeleteElements(k))
		m.HandleFunc("GET "+coll+"/{name}", s.mdShowElement(k))
		m.HandleFunc("PUT "+coll+"/{name}", s.mdUpdateElement(k))
		m.HandleFunc("DELETE "+coll+"/{name}", s.mdDeleteElement(k))
	}
	m.HandleFunc("POST "+ns+"/tags/{name}", s.mdCreateTag)
}

func collectionName(k store.MetadefKind) string {
	switch k {
	case store.MetadefObjects:
		return "objects"
	case store.MetadefProperties:
		return "properties"
	}
	return "tags"
}

// metadefCaller is r's identity for the metadefs rules: its project, and
// admin as the caller is root.
func (s *Server) metadefCaller(r *http.Request) store.MetadefCaller {
	c, project := s.caller(r)
	return store.MetadefCaller{Project: project, Admin: c.IsRoot()}
}

// mdBody reads a JSON object body; disallowed keys are 403 ("Attribute
// 'created_at' is read-only.") as Glance's deserializers check them
// before the schema.
func mdBody(w http.ResponseWriter, r *http.Request, disallowed ...string) (map[string]any, bool) {
	v, ok := readJSON(w, r)
	if !ok {
		return nil, false
	}
	m, isObj := v.(map[string]any)
	if !isObj {
		writeError(w, r, http.StatusBadRequest, "Provided object does not match schema: [...] is not of type 'object'")
		return nil, false
	}
	for _, k := range disallowed {
		if _, there := m[k]; there {
			writeError(w, r, http.StatusForbidden, fmt.Sprintf("Attribute '%s' is read-only.", k))
			return nil, false
		}
	}
	return m, true
}

// schemaErr is Glance's 400 for a body its schema refuses.
type schemaErr struct{ schema, reason string }

func (e *schemaErr) Error() string {
	return fmt.Sprintf("Provided object does not match schema '%s': %s", e.schema, e.reason)
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, http.StatusBadRequest, err.Error())
}

// pyRepr is a value as Python's repr shows it in jsonschema's messages.
func pyRepr(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + x + "'"
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// Checks of one value against a schema keyword, as jsonschema words them.
func wantString(schema, key string, v any, maxLen int) error {
	str, ok := v.(string)
	if !ok {
		return &schemaErr{schema, fmt.Sprintf("%s is not of type 'string'", pyRepr(v))}
	}
	if maxLen > 0 && len([]rune(str)) > maxLen {
		return &schemaErr{schema, fmt.Sprintf("%s is too long", pyRepr(v))}
	}
	return nil
}

func wantBool(schema string, v any) error {
	if _, ok := v.(bool); !ok {
		return &schemaErr{schema, fmt.Sprintf("%s is not of type 'boolean'", pyRepr(v))}
	}
	return nil
}

func wantCount(schema string, v any) error {
	f, ok := v.(float64)
	if !ok || f != float64(int64(f)) {
		return &schemaErr{schema, fmt.Sprintf("%s is not of type 'integer'", pyRepr(v))}
	}
	if f < 0 {
		return &schemaErr{schema, fmt.Sprintf("%s is less than the minimum of 0", pyRepr(v))}
	}
	return nil
}

func wantStrings(schema string, v any, unique bool) error {
	l, ok := v.([]any)
	if !ok {
		return &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(v))}
	}
	seen := map[string]bool{}
	for _, x := range l {
		str, ok := x.(string)
		if !ok {
			return &schemaErr{schema, fmt.Sprintf("%s is not of type 'string'", pyRepr(x))}
		}
		if unique && seen[str] {
			return &schemaErr{schema, fmt.Sprintf("%s has non-unique elements", pyRepr(v))}
		}
		seen[str] = true
	}
	return nil
}

var propertyTypes = []any{"array", "boolean", "integer", "number", "object", "string", nil}

func wantPropertyType(schema string, v any) error {
	if !slices.Contains(propertyTypes, v) {
		return &schemaErr{schema, fmt.Sprintf("%s is not one of ['array', 'boolean', 'integer', 'number', 'object', 'string', None]", pyRepr(v))}
	}
	return nil
}

// propertyKeys are the keys of Glance's property definition schema;
// stored are those its PropertyType model keeps (not "required").
var propertyKeys = []string{"name", "title", "description", "operators", "type", "required", "minimum", "maximum",
	"maxLength", "minLength", "pattern", "enum", "readonly", "default", "items", "maxItems", "minItems", "uniqueItems", "additionalItems"}

// checkProperty checks a property definition as Glance's schema does
// (type and title required; name too when requireName) and returns what
// is kept of it: its keys but name and required. strict (a property's
// own schema, additionalProperties false) refuses other keys; otherwise
// they are dropped (Glance's model does not keep them).
func checkProperty(schema string, m map[string]any, requireName, strict bool) (map[string]any, error) {
	required := []string{"type", "title"}
	if requireName {
		required = append(required, "name")
	}
	for _, k := range required {
		if _, ok := m[k]; !ok {
			return nil, &schemaErr{schema, fmt.Sprintf("'%s' is a required property", k)}
		}
	}
	out := map[string]any{}
	for k, v := range m {
		var err error
		switch k {
		case "name":
			err = wantString(schema, k, v, 80)
		case "title", "description", "pattern":
			err = wantString(schema, k, v, 0)
		case "type":
			if err = wantString(schema, k, v, 0); err == nil {
				err = wantPropertyType(schema, v)
			}
		case "operators":
			err = wantStrings(schema, v, false)
		case "required":
			err = wantStrings(schema, v, true)
		case "minimum", "maximum":
			if _, ok := v.(float64); !ok {
				err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'number'", pyRepr(v))}
			}
		case "maxLength", "minLength", "maxItems", "minItems":
			err = wantCount(schema, v)
		case "enum":
			if _, ok := v.([]any); !ok {
				err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(v))}
			}
		case "readonly", "uniqueItems", "additionalItems":
			err = wantBool(schema, v)
		case "default":
		case "items":
			it, ok := v.(map[string]any)
			if !ok {
				err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(v))}
				break
			}
			if t, ok := it["type"]; ok {
				if err = wantString(schema, "type", t, 0); err == nil {
					err = wantPropertyType(schema, t)
				}
			}
			if e, ok := it["enum"]; ok && err == nil {
				if _, ok := e.([]any); !ok {
					err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(e))}
				}
			}
			if err == nil {
				kept := map[string]any{}
				for _, ik := range []string{"type", "enum"} {
					if x, ok := it[ik]; ok {
						kept[ik] = x
					}
				}
				v = kept
			}
		default:
			if strict {
				return nil, &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", k)}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if k != "name" && k != "required" {
			out[k] = v
		}
	}
	return out, nil
}

// checkProperties checks a map of property definitions (a namespace's or
// an object's "properties") and returns them as elements, by name.
func checkProperties(schema string, v any, strict bool) ([]store.MetadefElement, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(v))}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	var out []store.MetadefElement
	for _, name := range names {
		pm, ok := m[name].(map[string]any)
		if !ok {
			return nil, &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(m[name]))}
		}
		def, err := checkProperty(schema, pm, false, strict)
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(def)
		out = append(out, store.MetadefElement{Name: name, Body: b})
	}
	return out, nil
}

// checkObject checks an object definition (name required; description,
// required, properties) and returns it as an element. strict refuses
// other keys (an object's own schema; in a namespace's, they are
// dropped); strictProps checks its property definitions strictly.
func checkObject(m map[string]any, strict, strictProps bool) (store.MetadefElement, error) {
	const schema = "object"
	if _, ok := m["name"]; !ok {
		return store.MetadefElement{}, &schemaErr{schema, "'name' is a required property"}
	}
	body := map[string]any{}
	var name string
	for k, v := range m {
		var err error
		switch k {
		case "name":
			err = wantString(schema, k, v, 80)
			name, _ = v.(string)
		case "description":
			err = wantString(schema, k, v, 0)
			body[k] = v
		case "required":
			err = wantStrings(schema, v, true)
			body[k] = v
		case "properties":
			var props []store.MetadefElement
			props, err = checkProperties(schema, v, strictProps)
			if err == nil {
				pm := map[string]json.RawMessage{}
				for _, p := range props {
					pm[p.Name] = p.Body
				}
				body[k] = pm
			}
		default:
			if strict {
				err = &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", k)}
			}
		}
		if err != nil {
			return store.MetadefElement{}, err
		}
	}
	b, _ := json.Marshal(body)
	return store.MetadefElement{Name: name, Body: b}, nil
}

// checkAssociations checks a namespace's resource_type_associations.
func checkAssociation(schema string, v any) (store.MetadefAssociation, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return store.MetadefAssociation{}, &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(v))}
	}
	var a store.MetadefAssociation
	for k, x := range m {
		max := 0
		if schema == "resource_type_association" {
			max = 80
		}
		var dst *string
		switch k {
		case "name":
			dst = &a.Name
		case "prefix":
			dst = &a.Prefix
		case "properties_target":
			dst = &a.PropertiesTarget
		default:
			if schema == "resource_type_association" {
				return a, &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", k)}
			}
			continue
		}
		if err := wantString(schema, k, x, max); err != nil {
			return a, err
		}
		*dst = x.(string)
	}
	if _, ok := m["name"]; !ok {
		return a, &schemaErr{schema, "'name' is a required property"}
	}
	return a, nil
}

// checkNamespace checks a namespace body (Glance's namespace schema) and
// returns its fields and, for a create, its contents.
func checkNamespace(m map[string]any) (store.MetadefNamespace, map[store.MetadefKind][]store.MetadefElement, error) {
	const schema = "namespace"
	var ns store.MetadefNamespace
	content := map[store.MetadefKind][]store.MetadefElement{}
	if _, ok := m["namespace"]; !ok {
		return ns, nil, &schemaErr{schema, "'namespace' is a required property"}
	}
	str := func(k string, v any, max int, dst **string) error {
		if err := wantString(schema, k, v, max); err != nil {
			return err
		}
		x := v.(string)
		*dst = &x
		return nil
	}
	for k, v := range m {
		var err error
		switch k {
		case "namespace":
			var p *string
			if err = str(k, v, 80, &p); err == nil {
				ns.Namespace = *p
			}
		case "display_name":
			err = str(k, v, 80, &ns.DisplayName)
		case "description":
			err = str(k, v, 500, &ns.Description)
		case "owner":
			var p *string
			if err = str(k, v, 255, &p); err == nil {
				ns.Owner = *p
			}
		case "visibility":
			if err = wantString(schema, k, v, 0); err == nil {
				if v != "public" && v != "private" {
					err = &schemaErr{schema, fmt.Sprintf("%s is not one of ['public', 'private']", pyRepr(v))}
				} else {
					ns.Visibility = v.(string)
				}
			}
		case "protected":
			if err = wantBool(schema, v); err == nil {
				ns.Protected = v.(bool)
			}
		case "resource_type_associations":
			l, ok := v.([]any)
			if !ok {
				err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(v))}
				break
			}
			for _, x := range l {
				var a store.MetadefAssociation
				if a, err = checkAssociation(schema, x); err != nil {
					break
				}
				ns.ResourceTypes = append(ns.ResourceTypes, a)
			}
		case "properties":
			content[store.MetadefProperties], err = checkProperties(schema, v, false)
		case "objects":
			l, ok := v.([]any)
			if !ok {
				err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(v))}
				break
			}
			for _, x := range l {
				om, ok := x.(map[string]any)
				if !ok {
					err = &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(x))}
					break
				}
				var e store.MetadefElement
				if e, err = checkObject(om, false, false); err != nil {
					break
				}
				content[store.MetadefObjects] = append(content[store.MetadefObjects], e)
			}
		case "tags":
			var tags []store.MetadefElement
			tags, err = checkTags(schema, v, false)
			content[store.MetadefTags] = tags
		default:
			err = &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", k)}
		}
		if err != nil {
			return ns, nil, err
		}
	}
	return ns, content, nil
}

// checkTags checks a list of tags [{"name": N}, ...].
func checkTags(schema string, v any, strict bool) ([]store.MetadefElement, error) {
	l, ok := v.([]any)
	if !ok {
		return nil, &schemaErr{schema, fmt.Sprintf("%s is not of type 'array'", pyRepr(v))}
	}
	var out []store.MetadefElement
	for _, x := range l {
		m, ok := x.(map[string]any)
		if !ok {
			return nil, &schemaErr{schema, fmt.Sprintf("%s is not of type 'object'", pyRepr(x))}
		}
		name, there := m["name"]
		if !there {
			return nil, &schemaErr{schema, "'name' is a required property"}
		}
		if err := wantString(schema, "name", name, 0); err != nil {
			return nil, err
		}
		if strict {
			for k := range m {
				if k != "name" {
					return nil, &schemaErr{schema, fmt.Sprintf("Additional properties are not allowed ('%s' was unexpected)", k)}
				}
			}
		}
		out = append(out, store.MetadefElement{Name: name.(string)})
	}
	return out, nil
}

// JSON shapes.

func (s *Server) namespaceJSON(ns *store.MetadefNamespace, withAssocs bool) map[string]any {
	m := map[string]any{
		"namespace":  ns.Namespace,
		"visibility": ns.Visibility,
		"protected":  ns.Protected,
		"created_at": glanceTime(ns.CreatedAt),
		"updated_at": glanceTime(ns.UpdatedAt),
		"self":       "/v2/metadefs/namespaces/" + ns.Namespace,
		"schema":     "/v2/schemas/metadefs/namespace",
	}
	if ns.DisplayName != nil {
		m["display_name"] = *ns.DisplayName
	}
	if ns.Description != nil {
		m["description"] = *ns.Description
	}
	if ns.Owner != "" {
		m["owner"] = ns.Owner
	}
	if withAssocs && len(ns.ResourceTypes) > 0 {
		l := make([]map[string]any, 0, len(ns.ResourceTypes))
		for _, a := range ns.ResourceTypes {
			l = append(l, associationJSON(a))
		}
		m["resource_type_associations"] = l
	}
	return m
}

func associationJSON(a store.MetadefAssociation) map[string]any {
	m := map[string]any{"name": a.Name, "created_at": glanceTime(a.CreatedAt), "updated_at": glanceTime(a.UpdatedAt)}
	if a.Prefix != "" {
		m["prefix"] = a.Prefix
	}
	if a.PropertiesTarget != "" {
		m["properties_target"] = a.PropertiesTarget
	}
	return m
}

// elementJSON is an element as Glance shows it: an object with its
// definition, times and links; a property's definition with its name; a
// tag's name and times.
func elementJSON(ns string, k store.MetadefKind, e store.MetadefElement) map[string]any {
	m := map[string]any{}
	if len(e.Body) > 0 {
		json.Unmarshal(e.Body, &m)
	}
	m["name"] = e.Name
	switch k {
	case store.MetadefObjects:
		m["created_at"], m["updated_at"] = glanceTime(e.CreatedAt), glanceTime(e.UpdatedAt)
		m["self"] = "/v2/metadefs/namespaces/" + ns + "/objects/" + e.Name
		m["schema"] = "/v2/schemas/metadefs/object"
	case store.MetadefTags:
		m["created_at"], m["updated_at"] = glanceTime(e.CreatedAt), glanceTime(e.UpdatedAt)
	}
	return m
}

// Namespaces.

// namespaceSortKeys are the namespace fields a list may sort by.
var namespaceSortKeys = []string{"created_at", "updated_at", "namespace", "display_name", "description", "visibility", "owner", "protected"}

// mdListNamespaces is GET /v2/metadefs/namespaces: the namespaces the
// caller sees, with visibility and resource_types (comma list) filters,
// sort_key and sort_dir (default created_at desc), limit (default 25,
// at most 1000) and marker (a namespace name) with the next link.
func (s *Server) mdListNamespaces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(msg string) { writeError(w, r, http.StatusBadRequest, msg) }
	limit, msg := listLimit(q.Get("limit"))
	if msg != "" {
		bad(msg)
		return
	}
	dir := cmp.Or(q.Get("sort_dir"), "desc")
	if dir != "asc" && dir != "desc" {
		bad("Invalid sort direction: " + dir)
		return
	}
	key := cmp.Or(q.Get("sort_key"), "created_at")
	if !slices.Contains(namespaceSortKeys, key) {
		bad("Invalid sort key: " + key)
		return
	}
	var f store.MetadefFilter
	if v := q.Get("visibility"); v != "" {
		if v != "public" && v != "private" {
			bad("Invalid visibility value: " + v)
			return
		}
		f.Visibility = v
	}
	if v := q.Get("resource_types"); v != "" {
		f.ResourceTypes = strings.Split(v, ",")
	}
	c := s.metadefCaller(r)
	all, err := s.st.MetadefNamespaces(c, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	field := func(ns *store.MetadefNamespace) string {
		switch key {
		case "updated_at":
			return glanceTime(ns.UpdatedAt)
		case "namespace":
			return ns.Namespace
		case "display_name":
			if ns.DisplayName != nil {
				return *ns.DisplayName
			}
		case "description":
			if ns.Description != nil {
				return *ns.Description
			}
		case "visibility":
			return ns.Visibility
		case "owner":
			return ns.Owner
		case "protected":
			return strconv.FormatBool(ns.Protected)
		}
		return glanceTime(ns.CreatedAt)
	}
	slices.SortStableFunc(all, func(a, b *store.MetadefNamespace) int {
		d := cmp.Or(cmp.Compare(field(a), field(b)), a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Namespace, b.Namespace))
		if dir == "desc" {
			return -d
		}
		return d
	})
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(all, func(ns *store.MetadefNamespace) bool { return ns.Namespace == m })
		if i < 0 {
			writeError(w, r, http.StatusNotFound, "Metadata definition namespace="+m+" was not found.")
			return
		}
		all = all[i+1:]
	}
	page := all[:min(limit, len(all))]
	list := make([]map[string]any, 0, len(page))
	for _, ns := range page {
		list = append(list, s.namespaceJSON(ns, true))
	}
	params := url.Values{}
	for k, v := range q {
		if k != "marker" {
			params[k] = v
		}
	}
	first := "/v2/metadefs/namespaces"
	if len(params) > 0 {
		first += "?" + params.Encode()
	}
	out := map[string]any{"namespaces": list, "first": first, "schema": "/v2/schemas/metadefs/namespaces"}
	if len(page) > 0 && len(page) == limit {
		params.Set("marker", page[len(page)-1].Namespace)
		out["next"] = "/v2/metadefs/namespaces?" + params.Encode()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) mdCreateNamespace(w http.ResponseWriter, r *http.Request) {
	m, ok := mdBody(w, r, "self", "schema", "created_at", "updated_at")
	if !ok {
		return
	}
	ns, content, err := checkNamespace(m)
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	created, err := s.st.CreateMetadefNamespace(s.metadefCaller(r), ns, content)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := s.namespaceJSON(created, true)
	addContentJSON(out, created.Namespace, content)
	w.Header().Set("Location", "/v2/metadefs/namespaces/"+created.Namespace)
	writeJSON(w, http.StatusCreated, out)
}

// addContentJSON adds a namespace's objects, properties and tags to its
// JSON, those that it has.
func addContentJSON(out map[string]any, ns string, content map[store.MetadefKind][]store.MetadefElement) {
	if objs := content[store.MetadefObjects]; len(objs) > 0 {
		l := make([]map[string]any, 0, len(objs))
		for _, e := range objs {
			l = append(l, elementJSON(ns, store.MetadefObjects, e))
		}
		out["objects"] = l
	}
	if props := content[store.MetadefProperties]; len(props) > 0 {
		pm := map[string]any{}
		for _, e := range props {
			pm[e.Name] = elementJSON(ns, store.MetadefProperties, e)
		}
		out["properties"] = pm
	}
	if tags := content[store.MetadefTags]; len(tags) > 0 {
		l := make([]map[string]any, 0, len(tags))
		for _, e := range tags {
			l = append(l, map[string]any{"name": e.Name})
		}
		out["tags"] = l
	}
}

// mdShowNamespace is GET .../namespaces/{ns}: the namespace with its
// associations, objects, properties and tags; ?resource_type=RT shows
// the properties (and objects' properties and required) with that
// association's prefix.
func (s *Server) mdShowNamespace(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("ns")
	ns, content, err := s.st.MetadefNamespace(s.metadefCaller(r), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := s.namespaceJSON(ns, true)
	addContentJSON(out, ns.Namespace, content)
	if rt := r.URL.Query().Get("resource_type"); rt != "" {
		prefixNames(out, ns, rt)
	}
	writeJSON(w, http.StatusOK, out)
}

// prefixNames prefixes the property names of a namespace's JSON with the
// prefix of its association with resource type rt, as Glance's show
// with a resource_type filter.
func prefixNames(out map[string]any, ns *store.MetadefNamespace, rt string) {
	i := slices.IndexFunc(ns.ResourceTypes, func(a store.MetadefAssociation) bool { return a.Name == rt })
	if i < 0 || ns.ResourceTypes[i].Prefix == "" {
		return
	}
	p := ns.ResourceTypes[i].Prefix
	prefixMap := func(m map[string]any) map[string]any {
		n := make(map[string]any, len(m))
		for k, v := range m {
			n[p+k] = v
		}
		return n
	}
	if props, ok := out["properties"].(map[string]any); ok {
		out["properties"] = prefixMap(props)
	}
	if objs, ok := out["objects"].([]map[string]any); ok {
		for _, o := range objs {
			if props, ok := o["properties"].(map[string]any); ok {
				o["properties"] = prefixMap(props)
			}
			if req, ok := o["required"].([]any); ok {
				for i, x := range req {
					if str, ok := x.(string); ok {
						req[i] = p + str
					}
				}
			}
		}
	}
}

// mdUpdateNamespace is PUT .../namespaces/{ns}: every field replaced
// (Glance: visibility defaults to private, protected to false, owner to
// the caller's project); a new "namespace" renames it.
func (s *Server) mdUpdateNamespace(w http.ResponseWriter, r *http.Request) {
	// As Glance: the body is checked before the namespace is looked up.
	c := s.metadefCaller(r)
	name := r.PathValue("ns")
	m, ok := mdBody(w, r, "self", "schema", "created_at", "updated_at")
	if !ok {
		return
	}
	ns, _, err := checkNamespace(m)
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	upd, err := s.st.UpdateMetadefNamespace(c, name, store.MetadefNamespaceUpdate{
		Namespace: ns.Namespace, DisplayName: ns.DisplayName, Description: ns.Description,
		Visibility: ns.Visibility, Protected: ns.Protected, Owner: ns.Owner})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.namespaceJSON(upd, false))
}

func (s *Server) mdDeleteNamespace(w http.ResponseWriter, r *http.Request) {
	if err := s.st.DeleteMetadefNamespace(s.metadefCaller(r), r.PathValue("ns")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Resource types.

// mdResourceTypes is GET /v2/metadefs/resource_types: every resource
// type, the standard ones first (they have no times: built in).
func (s *Server) mdResourceTypes(w http.ResponseWriter, r *http.Request) {
	rts, err := s.st.MetadefResourceTypes()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l := make([]map[string]any, 0, len(rts))
	for _, rt := range rts {
		m := map[string]any{"name": rt.Name}
		if !rt.CreatedAt.IsZero() {
			m["created_at"], m["updated_at"] = glanceTime(rt.CreatedAt), glanceTime(rt.UpdatedAt)
		}
		l = append(l, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"resource_types": l})
}

func (s *Server) mdListAssociations(w http.ResponseWriter, r *http.Request) {
	ns, _, err := s.st.MetadefNamespace(s.metadefCaller(r), r.PathValue("ns"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l := make([]map[string]any, 0, len(ns.ResourceTypes))
	for _, a := range ns.ResourceTypes {
		l = append(l, associationJSON(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"resource_type_associations": l})
}

func (s *Server) mdAssociate(w http.ResponseWriter, r *http.Request) {
	c := s.metadefCaller(r)
	name := r.PathValue("ns")
	m, ok := mdBody(w, r, "created_at", "updated_at")
	if !ok {
		return
	}
	a, err := checkAssociation("resource_type_association", m)
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	a, err = s.st.AssociateMetadefResourceType(c, name, a)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, associationJSON(a))
}

func (s *Server) mdDissociate(w http.ResponseWriter, r *http.Request) {
	if err := s.st.DissociateMetadefResourceType(s.metadefCaller(r), r.PathValue("ns"), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
