package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagefs/imagefs/store/kv"
)

// Metadata definitions ("metadefs", as Glance's catalog of them): namespaces
// of property definitions, objects and tags that describe the properties
// other services understand, each associated with resource types
// (OS::Glance::Image, OS::Nova::Flavor, ...). They describe images; they
// are not image records, and the mount does not show them. The API face
// (imagesapi) serves them; every rule is here: who may see and change
// what, protected namespaces, unique names, limits.
//
// Key space (in the catalog, either backend):
//
//	metadefs/ns/<namespace> -> JSON MetadefNamespace (its fields and its
//	                           resource type associations)
//	metadefs/nc/<namespace> -> JSON metadefContent (objects, properties,
//	                           tags; absent: none)
//	metadefs/rt/<name>      -> JSON MetadefResourceType (the resource
//	                           types associations introduced; the
//	                           standard ones are built in)
//
// Reads go to the catalog (a Get or a Scan; with etcd, a network read per
// call): metadefs are few and rarely read, so no in-memory copy and no
// watch are kept. Every change is one batch under the Conds of the keys it
// read (their ModRevs), retried on a conflict with another host; on the
// embedded catalog Store.metadefMu makes the read and the commit one
// step.
const (
	prefixMetadefNS      = "metadefs/ns/"
	prefixMetadefContent = "metadefs/nc/"
	prefixMetadefRT      = "metadefs/rt/"
)

// Limits of the metadefs catalog. Glance has none; these bound a record
// (etcd refuses a request over 1.5 MiB) and a listing.
const (
	// MaxMetadefNamespaces is the most namespaces a catalog holds;
	// another create is ErrQuota.
	MaxMetadefNamespaces = 10000
	// MaxMetadefElements is the most objects, properties, tags or
	// resource type associations of one kind in one namespace
	// (ErrQuota).
	MaxMetadefElements = 1000
	// MaxMetadefContentBytes bounds a namespace's objects, properties
	// and tags as stored (JSON, bytes); more is ErrQuota.
	MaxMetadefContentBytes = 1 << 20
	// MaxMetadefNameBytes bounds a namespace, object, property, tag or
	// resource type name (Glance's maxLength 80).
	MaxMetadefNameBytes = 80
)

// MetadefCaller is who calls the metadefs API: a project (Keystone's; ""
// for none) and whether the caller has the admin role.
type MetadefCaller struct {
	Project string
	Admin   bool
}

// Visibility of a namespace.
const (
	MetadefPublic  = "public"
	MetadefPrivate = "private"
)

// MetadefNamespace is a namespace's own fields and its resource type
// associations (in the order they were made). Owner "" means none (every
// caller sees it, as Glance's namespaces without an owner).
type MetadefNamespace struct {
	Namespace     string               `json:"namespace"`
	DisplayName   *string              `json:"display_name,omitempty"`
	Description   *string              `json:"description,omitempty"`
	Visibility    string               `json:"visibility"`
	Protected     bool                 `json:"protected"`
	Owner         string               `json:"owner,omitempty"`
	CreatedAt     time.Time            `json:"created_at"`
	UpdatedAt     time.Time            `json:"updated_at"`
	ResourceTypes []MetadefAssociation `json:"resource_type_associations,omitempty"`
	rev           int64                // ModRev of its key
}

// MetadefAssociation is a resource type associated with a namespace:
// Prefix is what properties of the namespace are prefixed with on that
// resource type ("hw_"), PropertiesTarget which of its metadata they go
// to ("image"); both may be empty.
type MetadefAssociation struct {
	Name             string    `json:"name"`
	Prefix           string    `json:"prefix,omitempty"`
	PropertiesTarget string    `json:"properties_target,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// MetadefResourceType is a resource type. The standard ones
// (StandardResourceTypes) are built in (Protected, no times); the others
// were introduced by an association and stay.
type MetadefResourceType struct {
	Name      string    `json:"name"`
	Protected bool      `json:"protected,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// StandardResourceTypes are the resource types of Glance's shipped
// metadefs (etc/metadefs, loaded by glance-manage db load_metadefs),
// listed first by MetadefResourceTypes.
var StandardResourceTypes = []string{
	"OS::Glance::Image", "OS::Cinder::Volume", "OS::Nova::Flavor",
	"OS::Nova::Aggregate", "OS::Nova::Server", "OS::Trove::Instance",
}

// MetadefKind is a kind of element of a namespace.
type MetadefKind string

const (
	MetadefObjects    MetadefKind = "object"
	MetadefProperties MetadefKind = "property"
	MetadefTags       MetadefKind = "tag"
)

// MetadefElement is an object, property or tag of a namespace: its name,
// its definition (a JSON object the API face checked and shaped: an
// object's description, required and properties; a property's schema;
// nothing for a tag), and its times.
type MetadefElement struct {
	Name      string          `json:"name"`
	Body      json.RawMessage `json:"body,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// metadefContent is the value of metadefs/nc/<namespace>: each kind's
// elements in the order they were created.
type metadefContent struct {
	Objects    []MetadefElement `json:"objects,omitempty"`
	Properties []MetadefElement `json:"properties,omitempty"`
	Tags       []MetadefElement `json:"tags,omitempty"`
	rev        int64
}

func (c *metadefContent) list(k MetadefKind) *[]MetadefElement {
	switch k {
	case MetadefObjects:
		return &c.Objects
	case MetadefProperties:
		return &c.Properties
	}
	return &c.Tags
}

// MetadefFilter selects namespaces in MetadefNamespaces.
type MetadefFilter struct {
	// Visibility: "" (any), public or private.
	Visibility string
	// ResourceTypes: namespaces associated with any of them (none: all).
	ResourceTypes []string
}

// errNotAdmin is Glance's policy refusal: metadefs are changed by admins.
func errNotAdmin(what string) error {
	return fmt.Errorf("%w: you are not authorized to complete this action (%s is for admins)", ErrPermission, what)
}

// metadefVisible is Glance's rule: an admin sees every namespace; others
// see public ones, those without an owner, and their project's.
func metadefVisible(c MetadefCaller, ns *MetadefNamespace) bool {
	return c.Admin || ns.Owner == "" || ns.Visibility == MetadefPublic || (c.Project != "" && c.Project == ns.Owner)
}

// validMetadefName checks a namespace, element or resource type name:
// 1-80 bytes of UTF-8, no '/' (a name is a path component of the API's
// URLs), no control character. Errors wrap ErrInvalid.
func validMetadefName(what, name string) error {
	switch {
	case name == "" || len(name) > MaxMetadefNameBytes:
		return fmt.Errorf("%w: %s name must be 1-%d bytes, got %d", ErrInvalid, what, MaxMetadefNameBytes, len(name))
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %s name %q is not valid UTF-8", ErrInvalid, what, name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("%w: %s name %q contains '/'", ErrInvalid, what, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s name %q contains a control character", ErrInvalid, what, name)
		}
	}
	return nil
}

// checkNamespaceFields checks ns's fields (name, visibility, lengths as
// Glance's schema: display_name 80, description 500, owner 255).
func checkNamespaceFields(ns *MetadefNamespace) error {
	if err := validMetadefName("namespace", ns.Namespace); err != nil {
		return err
	}
	if ns.Visibility != MetadefPublic && ns.Visibility != MetadefPrivate {
		return fmt.Errorf("%w: visibility %q: must be public or private", ErrInvalid, ns.Visibility)
	}
	if ns.DisplayName != nil && len(*ns.DisplayName) > 80 {
		return fmt.Errorf("%w: display_name is longer than 80 bytes", ErrInvalid)
	}
	if ns.Description != nil && len(*ns.Description) > 500 {
		return fmt.Errorf("%w: description is longer than 500 bytes", ErrInvalid)
	}
	if len(ns.Owner) > 255 {
		return fmt.Errorf("%w: owner is longer than 255 bytes", ErrInvalid)
	}
	return nil
}

func checkAssociation(a *MetadefAssociation) error {
	if err := validMetadefName("resource type", a.Name); err != nil {
		return err
	}
	if len(a.Prefix) > 80 || len(a.PropertiesTarget) > 80 {
		return fmt.Errorf("%w: resource type association %s: prefix and properties_target are at most 80 bytes", ErrInvalid, a.Name)
	}
	return nil
}

// checkElement checks an element before it is stored.
func checkElement(k MetadefKind, e *MetadefElement) error {
	if err := validMetadefName(string(k), e.Name); err != nil {
		return err
	}
	if len(e.Body) > 0 {
		var m map[string]any
		if json.Unmarshal(e.Body, &m) != nil {
			return fmt.Errorf("%w: %s %s: the definition is not a JSON object", ErrInvalid, k, e.Name)
		}
	}
	return nil
}

// sameName reports whether two element names are the same: tags ignore
// case (Glance: "metadata tag names are case insensitive").
func sameName(k MetadefKind, a, b string) bool {
	if k == MetadefTags {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// metadefNow is the time of a change, to the second as Glance keeps it.
func metadefNow() time.Time { return time.Now().UTC().Truncate(time.Second) }

// getNamespace reads namespace name's record (nil when absent).
func (s *Store) getNamespace(name string) (*MetadefNamespace, error) {
	ctx, cancel := s.cat.ctx()
	defer cancel()
	p, err := s.cat.kv.Get(ctx, prefixMetadefNS+name)
	if err != nil {
		return nil, catalogErr(err)
	}
	if p.ModRev == 0 {
		return nil, nil
	}
	ns := new(MetadefNamespace)
	if err := json.Unmarshal(p.Value, ns); err != nil {
		return nil, fmt.Errorf("%w: metadefs namespace %q: record unreadable: %v", ErrCatalog, name, err)
	}
	ns.rev = p.ModRev
	return ns, nil
}

// getContent reads namespace name's elements (empty when absent; rev 0).
func (s *Store) getContent(name string) (*metadefContent, error) {
	ctx, cancel := s.cat.ctx()
	defer cancel()
	p, err := s.cat.kv.Get(ctx, prefixMetadefContent+name)
	if err != nil {
		return nil, catalogErr(err)
	}
	c := new(metadefContent)
	if p.ModRev == 0 {
		return c, nil
	}
	if err := json.Unmarshal(p.Value, c); err != nil {
		return nil, fmt.Errorf("%w: metadefs namespace %q: content unreadable: %v", ErrCatalog, name, err)
	}
	c.rev = p.ModRev
	return c, nil
}

// visibleNamespace reads namespace name as c may see it: ErrNotFound when
// absent or not visible (Glance answers 404 for both).
func (s *Store) visibleNamespace(c MetadefCaller, name string) (*MetadefNamespace, error) {
	ns, err := s.getNamespace(name)
	if err != nil {
		return nil, err
	}
	if ns == nil || !metadefVisible(c, ns) {
		return nil, fmt.Errorf("%w: metadata definition namespace=%s was not found", ErrNotFound, name)
	}
	return ns, nil
}

// metadefChange is what a change function decides: the puts and deletes
// of the batch, and the keys (with the ModRevs read) it commits under.
type metadefChange struct {
	conds []kv.Cond
	ops   []kv.Op
	room  kv.Room
}

func (m *metadefChange) put(key string, v any, rev int64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: encoding %s: %v", ErrCatalog, key, err)
	}
	m.conds = append(m.conds, kv.Cond{Key: key, ModRev: rev})
	m.ops = append(m.ops, kv.Op{Kind: kv.Put, Key: key, Value: b})
	return nil
}

func (m *metadefChange) del(key string, rev int64) {
	m.conds = append(m.conds, kv.Cond{Key: key, ModRev: rev})
	m.ops = append(m.ops, kv.Op{Kind: kv.Delete, Key: key})
}

// putContent adds content c of namespace name to the change (a delete
// when it is empty), checking its size.
func (m *metadefChange) putContent(name string, c *metadefContent, rev int64) error {
	if len(c.Objects)+len(c.Properties)+len(c.Tags) == 0 {
		if rev != 0 {
			m.del(prefixMetadefContent+name, rev)
		}
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("%w: encoding metadefs content: %v", ErrCatalog, err)
	}
	if len(b) > MaxMetadefContentBytes {
		return fmt.Errorf("%w: the objects, properties and tags of namespace %s would take %d bytes; at most %d", ErrQuota, name, len(b), MaxMetadefContentBytes)
	}
	m.conds = append(m.conds, kv.Cond{Key: prefixMetadefContent + name, ModRev: rev})
	m.ops = append(m.ops, kv.Op{Kind: kv.Put, Key: prefixMetadefContent + name, Value: b})
	return nil
}

// metadefCommit runs decide and commits its change, again (up to 8
// times) when another host changed a key it read meanwhile (then
// ErrBusy). decide reads what it needs (getNamespace, getContent, ...)
// and returns the change; its error is returned as it is. Holds
// metadefMu throughout: the store's only lock it takes, and no other is
// held (a leaf, held across catalog reads and the commit).
func (s *Store) metadefCommit(decide func() (*metadefChange, error)) error {
	s.metadefMu.Lock()
	defer s.metadefMu.Unlock()
	for attempt := 0; ; attempt++ {
		ch, err := decide()
		if err != nil {
			return err
		}
		if len(ch.ops) == 0 {
			return nil
		}
		ctx, cancel := s.cat.ctx()
		_, err = s.cat.kv.Commit(ctx, &kv.Batch{Conds: ch.conds, Ops: ch.ops, Room: ch.room})
		cancel()
		if errors.Is(err, kv.ErrConflict) {
			if attempt < 8 {
				continue
			}
			return fmt.Errorf("%w: the metadata definitions kept changing on other hosts meanwhile; try again", ErrBusy)
		}
		if errors.Is(err, kv.ErrTooLarge) {
			return fmt.Errorf("%w: the change is larger than the catalog accepts in one request: %v", ErrQuota, err)
		}
		if err != nil && !errors.Is(err, kv.ErrUnavailable) {
			s.log.Error("metadefs commit failed; nothing was changed", "err", err)
		}
		return catalogErr(err)
	}
}

// scanNamespaces calls fn for every namespace record, in name order.
func (s *Store) scanNamespaces(fn func(*MetadefNamespace) error) error {
	ctx, cancel := s.cat.ctx()
	defer cancel()
	_, err := s.cat.kv.Scan(ctx, prefixMetadefNS, "metadefs/ns0", 0, func(p kv.Pair) error {
		ns := new(MetadefNamespace)
		if err := json.Unmarshal(p.Value, ns); err != nil {
			s.log.Error("metadefs: a namespace record cannot be read; skipped", "key", p.Key, "err", err)
			return nil
		}
		ns.rev = p.ModRev
		return fn(ns)
	})
	if err != nil && !errors.Is(err, ErrCatalog) {
		return catalogErr(err)
	}
	return err
}

// MetadefNamespaces returns the namespaces c may see that match f, in
// name order (the API sorts and pages them). Errors: ErrUnavailable,
// ErrCatalog.
func (s *Store) MetadefNamespaces(c MetadefCaller, f MetadefFilter) ([]*MetadefNamespace, error) {
	var out []*MetadefNamespace
	err := s.scanNamespaces(func(ns *MetadefNamespace) error {
		if !metadefVisible(c, ns) || (f.Visibility != "" && ns.Visibility != f.Visibility) {
			return nil
		}
		if len(f.ResourceTypes) > 0 && !slices.ContainsFunc(ns.ResourceTypes, func(a MetadefAssociation) bool {
			return slices.Contains(f.ResourceTypes, a.Name)
		}) {
			return nil
		}
		out = append(out, ns)
		return nil
	})
	return out, err
}

// MetadefNamespace returns namespace name as c sees it, with its
// elements by kind. ErrNotFound when it does not exist or c may not see
// it.
func (s *Store) MetadefNamespace(c MetadefCaller, name string) (*MetadefNamespace, map[MetadefKind][]MetadefElement, error) {
	ns, err := s.visibleNamespace(c, name)
	if err != nil {
		return nil, nil, err
	}
	ct, err := s.getContent(name)
	if err != nil {
		return nil, nil, err
	}
	return ns, map[MetadefKind][]MetadefElement{MetadefObjects: ct.Objects, MetadefProperties: ct.Properties, MetadefTags: ct.Tags}, nil
}

// CreateMetadefNamespace creates namespace ns (its Namespace, DisplayName,
// Description, Visibility ("" is private), Protected, Owner ("" is c's
// project) and ResourceTypes) with the elements of content, in one
// commit, and returns it. Admins only (ErrPermission). Errors:
// ErrInvalid (a name or field), ErrExists (the name is taken, or two
// elements of one kind share a name), ErrQuota, ErrNoSpace,
// ErrUnavailable.
func (s *Store) CreateMetadefNamespace(c MetadefCaller, ns MetadefNamespace, content map[MetadefKind][]MetadefElement) (*MetadefNamespace, error) {
	if !c.Admin {
		return nil, errNotAdmin("creating a namespace")
	}
	if ns.Visibility == "" {
		ns.Visibility = MetadefPrivate
	}
	if ns.Owner == "" {
		ns.Owner = c.Project
	}
	if err := checkNamespaceFields(&ns); err != nil {
		return nil, err
	}
	now := metadefNow()
	ns.CreatedAt, ns.UpdatedAt = now, now
	assocs := ns.ResourceTypes
	ns.ResourceTypes = nil
	for _, a := range assocs {
		if err := addAssociation(&ns, a, now); err != nil {
			return nil, err
		}
	}
	ct := new(metadefContent)
	for _, k := range []MetadefKind{MetadefObjects, MetadefProperties, MetadefTags} {
		for _, e := range content[k] {
			if err := addElement(ns.Namespace, ct, k, e, now); err != nil {
				return nil, err
			}
		}
	}
	err := s.metadefCommit(func() (*metadefChange, error) {
		cur, err := s.getNamespace(ns.Namespace)
		if err != nil {
			return nil, err
		}
		if cur != nil {
			return nil, fmt.Errorf("%w: the metadata definition namespace=%s already exists", ErrExists, ns.Namespace)
		}
		n := 0
		if err := s.scanNamespaces(func(*MetadefNamespace) error { n++; return nil }); err != nil {
			return nil, err
		}
		if n >= MaxMetadefNamespaces {
			return nil, fmt.Errorf("%w: the catalog holds %d metadata definition namespaces, the most it may", ErrQuota, n)
		}
		ch := &metadefChange{room: kv.Grows}
		if err := ch.put(prefixMetadefNS+ns.Namespace, &ns, 0); err != nil {
			return nil, err
		}
		// A content key left by nothing should not exist; commit only
		// while it is absent, as the namespace key.
		if err := ch.putContent(ns.Namespace, ct, 0); err != nil {
			return nil, err
		}
		if err := s.resourceTypeOps(ch, ns.ResourceTypes, now); err != nil {
			return nil, err
		}
		return ch, nil
	})
	if err != nil {
		return nil, err
	}
	return &ns, nil
}

// addAssociation adds association a to ns (ErrExists when ns has it,
// ErrQuota past MaxMetadefElements).
func addAssociation(ns *MetadefNamespace, a MetadefAssociation, now time.Time) error {
	if err := checkAssociation(&a); err != nil {
		return err
	}
	if slices.ContainsFunc(ns.ResourceTypes, func(o MetadefAssociation) bool { return o.Name == a.Name }) {
		return fmt.Errorf("%w: the metadata definition resource-type association of resource-type=%s to namespace=%s already exists", ErrExists, a.Name, ns.Namespace)
	}
	if len(ns.ResourceTypes) >= MaxMetadefElements {
		return fmt.Errorf("%w: namespace %s has %d resource type associations, the most it may", ErrQuota, ns.Namespace, len(ns.ResourceTypes))
	}
	a.CreatedAt, a.UpdatedAt = now, now
	ns.ResourceTypes = append(ns.ResourceTypes, a)
	return nil
}

// addElement adds e to ct's elements of kind k (ErrExists when the name
// is taken, ErrQuota past MaxMetadefElements).
func addElement(ns string, ct *metadefContent, k MetadefKind, e MetadefElement, now time.Time) error {
	if err := checkElement(k, &e); err != nil {
		return err
	}
	l := ct.list(k)
	if slices.ContainsFunc(*l, func(o MetadefElement) bool { return sameName(k, o.Name, e.Name) }) {
		return errDuplicateElement(ns, k, e.Name)
	}
	if len(*l) >= MaxMetadefElements {
		return fmt.Errorf("%w: namespace %s has %d %ss, the most it may", ErrQuota, ns, len(*l), k)
	}
	e.CreatedAt, e.UpdatedAt = now, now
	*l = append(*l, e)
	return nil
}

func errDuplicateElement(ns string, k MetadefKind, name string) error {
	if k == MetadefTags {
		return fmt.Errorf("%w: a metadata tag with name=%s already exists in namespace=%s. (Please note that metadata tag names are case insensitive).", ErrExists, name, ns)
	}
	return fmt.Errorf("%w: a metadata definition %s with name=%s already exists in namespace=%s", ErrExists, k, name, ns)
}

func errElementNotFound(ns string, k MetadefKind, name string) error {
	return fmt.Errorf("%w: the metadata definition %s with name=%s was not found in namespace=%s", ErrNotFound, k, name, ns)
}

// resourceTypeOps adds to ch the records of the resource types of assocs
// that are neither standard nor recorded (created only while absent).
func (s *Store) resourceTypeOps(ch *metadefChange, assocs []MetadefAssociation, now time.Time) error {
	for _, a := range assocs {
		if slices.Contains(StandardResourceTypes, a.Name) {
			continue
		}
		ctx, cancel := s.cat.ctx()
		p, err := s.cat.kv.Get(ctx, prefixMetadefRT+a.Name)
		cancel()
		if err != nil {
			return catalogErr(err)
		}
		if p.ModRev != 0 {
			continue
		}
		if err := ch.put(prefixMetadefRT+a.Name, &MetadefResourceType{Name: a.Name, CreatedAt: now, UpdatedAt: now}, 0); err != nil {
			return err
		}
	}
	return nil
}

// MetadefNamespaceUpdate is a namespace's new fields (Glance's PUT: every
// field replaced; Visibility "" is private, Owner "" is the caller's
// project).
type MetadefNamespaceUpdate struct {
	Namespace   string
	DisplayName *string
	Description *string
	Visibility  string
	Protected   bool
	Owner       string
}

// UpdateMetadefNamespace replaces the fields of namespace name with u
// (a new Namespace renames it, with its elements) and returns it. Admins
// only. Errors: ErrNotFound (absent or not visible), ErrPermission,
// ErrInvalid, ErrExists (the new name is taken), ErrUnavailable.
func (s *Store) UpdateMetadefNamespace(c MetadefCaller, name string, u MetadefNamespaceUpdate) (*MetadefNamespace, error) {
	var out *MetadefNamespace
	err := s.metadefCommit(func() (*metadefChange, error) {
		ns, err := s.visibleNamespace(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Admin {
			return nil, errNotAdmin("changing a namespace")
		}
		rev := ns.rev
		ns.Namespace, ns.DisplayName, ns.Description, ns.Protected = u.Namespace, u.DisplayName, u.Description, u.Protected
		ns.Visibility, ns.Owner = u.Visibility, u.Owner
		if ns.Visibility == "" {
			ns.Visibility = MetadefPrivate
		}
		if ns.Owner == "" {
			ns.Owner = c.Project
		}
		if err := checkNamespaceFields(ns); err != nil {
			return nil, err
		}
		ns.UpdatedAt = metadefNow()
		ch := &metadefChange{room: kv.Grows}
		if ns.Namespace != name {
			taken, err := s.getNamespace(ns.Namespace)
			if err != nil {
				return nil, err
			}
			if taken != nil {
				return nil, fmt.Errorf("%w: invalid update. It would result in a duplicate metadata definition namespace with the same name of %s", ErrExists, ns.Namespace)
			}
			ct, err := s.getContent(name)
			if err != nil {
				return nil, err
			}
			ch.del(prefixMetadefNS+name, rev)
			if ct.rev != 0 {
				ch.del(prefixMetadefContent+name, ct.rev)
				if err := ch.putContent(ns.Namespace, ct, 0); err != nil {
					return nil, err
				}
			}
			rev = 0
		}
		if err := ch.put(prefixMetadefNS+ns.Namespace, ns, rev); err != nil {
			return nil, err
		}
		out = ns
		return ch, nil
	})
	return out, err
}

// DeleteMetadefNamespace deletes namespace name with its elements and
// associations. Admins only; a protected namespace is ErrNotPermitted.
func (s *Store) DeleteMetadefNamespace(c MetadefCaller, name string) error {
	return s.metadefCommit(func() (*metadefChange, error) {
		ns, err := s.visibleNamespace(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Admin {
			return nil, errNotAdmin("deleting a namespace")
		}
		if ns.Protected {
			return nil, fmt.Errorf("%w: metadata definition namespace %s is protected and cannot be deleted", ErrNotPermitted, name)
		}
		ct, err := s.getContent(name)
		if err != nil {
			return nil, err
		}
		ch := &metadefChange{room: kv.Frees}
		ch.del(prefixMetadefNS+name, ns.rev)
		if ct.rev != 0 {
			ch.del(prefixMetadefContent+name, ct.rev)
		}
		return ch, nil
	})
}

// changeContent is the common path of element changes: namespace name
// visible to c, c an admin (what names the change for the refusal), then
// f changes the content; the namespace's key is a Cond too (a namespace
// renamed or deleted meanwhile is a conflict).
func (s *Store) changeContent(c MetadefCaller, name, what string, room kv.Room, f func(ns *MetadefNamespace, ct *metadefContent) error) error {
	return s.metadefCommit(func() (*metadefChange, error) {
		ns, err := s.visibleNamespace(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Admin {
			return nil, errNotAdmin(what)
		}
		ct, err := s.getContent(name)
		if err != nil {
			return nil, err
		}
		rev := ct.rev
		if err := f(ns, ct); err != nil {
			return nil, err
		}
		ch := &metadefChange{room: room, conds: []kv.Cond{{Key: prefixMetadefNS + name, ModRev: ns.rev}}}
		if err := ch.putContent(name, ct, rev); err != nil {
			return nil, err
		}
		if len(ch.ops) == 0 {
			// Nothing to write (emptied content already absent): the
			// namespace's Cond alone makes no change.
			ch.conds = nil
		}
		return ch, nil
	})
}

// MetadefElements returns the elements of kind k of namespace name, in
// the order they were created. ErrNotFound: namespace absent or not
// visible.
func (s *Store) MetadefElements(c MetadefCaller, name string, k MetadefKind) ([]MetadefElement, error) {
	if _, err := s.visibleNamespace(c, name); err != nil {
		return nil, err
	}
	ct, err := s.getContent(name)
	if err != nil {
		return nil, err
	}
	return *ct.list(k), nil
}

// MetadefElement returns element elem of kind k of namespace name
// (ErrNotFound: namespace or element).
func (s *Store) MetadefElement(c MetadefCaller, name string, k MetadefKind, elem string) (MetadefElement, error) {
	els, err := s.MetadefElements(c, name, k)
	if err != nil {
		return MetadefElement{}, err
	}
	for _, e := range els {
		if e.Name == elem {
			return e, nil
		}
	}
	return MetadefElement{}, errElementNotFound(name, k, elem)
}

// CreateMetadefElements adds els (of kind k) to namespace name in one
// commit and returns them as stored. replace (tags only: Glance's POST
// of a tag list without X-Openstack-Append) removes the existing ones of
// that kind first. Admins only. Errors: ErrNotFound, ErrPermission,
// ErrInvalid, ErrExists (a name taken, or given twice), ErrQuota.
func (s *Store) CreateMetadefElements(c MetadefCaller, name string, k MetadefKind, els []MetadefElement, replace bool) ([]MetadefElement, error) {
	var out []MetadefElement
	err := s.changeContent(c, name, "adding a "+string(k), kv.Grows, func(ns *MetadefNamespace, ct *metadefContent) error {
		if replace {
			*ct.list(k) = nil
		}
		now := metadefNow()
		l := ct.list(k)
		from := len(*l)
		for _, e := range els {
			if err := addElement(name, ct, k, e, now); err != nil {
				return err
			}
		}
		out = slices.Clone((*l)[from:])
		return nil
	})
	return out, err
}

// UpdateMetadefElement replaces element elem of kind k of namespace name
// with e (its name and body; a new name renames it) and returns it.
// Admins only. Errors: ErrNotFound, ErrPermission, ErrInvalid, ErrExists
// (the new name is another element's).
func (s *Store) UpdateMetadefElement(c MetadefCaller, name string, k MetadefKind, elem string, e MetadefElement) (MetadefElement, error) {
	var out MetadefElement
	err := s.changeContent(c, name, "changing a "+string(k), kv.Grows, func(ns *MetadefNamespace, ct *metadefContent) error {
		if err := checkElement(k, &e); err != nil {
			return err
		}
		l := *ct.list(k)
		i := slices.IndexFunc(l, func(o MetadefElement) bool { return o.Name == elem })
		if i < 0 {
			return errElementNotFound(name, k, elem)
		}
		for j, o := range l {
			if j != i && sameName(k, o.Name, e.Name) {
				return errDuplicateElement(name, k, e.Name)
			}
		}
		e.CreatedAt, e.UpdatedAt = l[i].CreatedAt, metadefNow()
		l[i] = e
		out = e
		return nil
	})
	return out, err
}

// DeleteMetadefElement removes element elem of kind k of namespace name.
// Admins only; in a protected namespace ErrNotPermitted (as Glance).
func (s *Store) DeleteMetadefElement(c MetadefCaller, name string, k MetadefKind, elem string) error {
	return s.changeContent(c, name, "deleting a "+string(k), kv.Frees, func(ns *MetadefNamespace, ct *metadefContent) error {
		l := ct.list(k)
		i := slices.IndexFunc(*l, func(o MetadefElement) bool { return o.Name == elem })
		if i < 0 {
			return errElementNotFound(name, k, elem)
		}
		if ns.Protected {
			return fmt.Errorf("%w: metadata definition %s %s is protected and cannot be deleted", ErrNotPermitted, k, elem)
		}
		*l = slices.Delete(*l, i, i+1)
		return nil
	})
}

// DeleteMetadefElements removes every element of kind k of namespace
// name. Admins only; a protected namespace is ErrNotPermitted.
func (s *Store) DeleteMetadefElements(c MetadefCaller, name string, k MetadefKind) error {
	return s.changeContent(c, name, "deleting "+string(k)+"s", kv.Frees, func(ns *MetadefNamespace, ct *metadefContent) error {
		if ns.Protected {
			return fmt.Errorf("%w: metadata definition namespace %s is protected and cannot be deleted", ErrNotPermitted, name)
		}
		*ct.list(k) = nil
		return nil
	})
}

// MetadefResourceTypes returns every resource type: the standard ones,
// then those associations introduced, by name.
func (s *Store) MetadefResourceTypes() ([]MetadefResourceType, error) {
	out := make([]MetadefResourceType, 0, len(StandardResourceTypes))
	for _, n := range StandardResourceTypes {
		out = append(out, MetadefResourceType{Name: n, Protected: true})
	}
	ctx, cancel := s.cat.ctx()
	defer cancel()
	_, err := s.cat.kv.Scan(ctx, prefixMetadefRT, "metadefs/rt0", 0, func(p kv.Pair) error {
		var rt MetadefResourceType
		if err := json.Unmarshal(p.Value, &rt); err != nil {
			s.log.Error("metadefs: a resource type record cannot be read; skipped", "key", p.Key, "err", err)
			return nil
		}
		if !slices.Contains(StandardResourceTypes, rt.Name) {
			out = append(out, rt)
		}
		return nil
	})
	return out, catalogErr(err)
}

// AssociateMetadefResourceType associates resource type a.Name (with
// a.Prefix, a.PropertiesTarget) with namespace name, recording the
// resource type when it is new, and returns the association. Admins
// only. Errors: ErrNotFound, ErrPermission, ErrInvalid, ErrExists.
func (s *Store) AssociateMetadefResourceType(c MetadefCaller, name string, a MetadefAssociation) (MetadefAssociation, error) {
	var out MetadefAssociation
	err := s.metadefCommit(func() (*metadefChange, error) {
		ns, err := s.visibleNamespace(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Admin {
			return nil, errNotAdmin("associating a resource type")
		}
		now := metadefNow()
		if err := addAssociation(ns, a, now); err != nil {
			return nil, err
		}
		out = ns.ResourceTypes[len(ns.ResourceTypes)-1]
		ch := &metadefChange{room: kv.Grows}
		if err := ch.put(prefixMetadefNS+name, ns, ns.rev); err != nil {
			return nil, err
		}
		if err := s.resourceTypeOps(ch, []MetadefAssociation{out}, now); err != nil {
			return nil, err
		}
		return ch, nil
	})
	return out, err
}

// DissociateMetadefResourceType removes the association of resource
// type rt with namespace name (the resource type stays). Admins only.
// Errors: ErrNotFound (namespace, or no such association),
// ErrPermission, ErrNotPermitted (a protected namespace).
func (s *Store) DissociateMetadefResourceType(c MetadefCaller, name, rt string) error {
	return s.metadefCommit(func() (*metadefChange, error) {
		ns, err := s.visibleNamespace(c, name)
		if err != nil {
			return nil, err
		}
		if !c.Admin {
			return nil, errNotAdmin("removing a resource type association")
		}
		i := slices.IndexFunc(ns.ResourceTypes, func(a MetadefAssociation) bool { return a.Name == rt })
		if i < 0 {
			return nil, fmt.Errorf("%w: failed to find resource type %s to delete", ErrNotFound, rt)
		}
		if ns.Protected {
			return nil, fmt.Errorf("%w: metadata definition resource-type-association %s is protected and cannot be deleted", ErrNotPermitted, rt)
		}
		ns.ResourceTypes = slices.Delete(ns.ResourceTypes, i, i+1)
		ch := &metadefChange{room: kv.Frees}
		if err := ch.put(prefixMetadefNS+name, ns, ns.rev); err != nil {
			return nil, err
		}
		return ch, nil
	})
}

// metadefs copies the source's metadata definitions into the
// destination (the last step of Migrate): each namespace (its record and
// its elements' record) in one commit under the condition that neither
// exists there, each introduced resource type likewise. One already
// there with the same records is skipped; one there with other records
// is a conflict (MigrateReport.MetadefConflicts): nothing of it is
// written. A dry run writes nothing and counts what it would write.
func (m *migration) metadefs() error {
	src := map[string][]byte{}
	_, err := m.s.cat.kv.Scan(context.Background(), "metadefs/", "metadefs0", 0, func(p kv.Pair) error {
		src[p.Key] = bytes.Clone(p.Value)
		return nil
	})
	if err != nil {
		return catalogErr(err)
	}
	var units [][]string // keys written together
	for k := range src {
		switch {
		case strings.HasPrefix(k, prefixMetadefNS):
			units = append(units, []string{k, prefixMetadefContent + k[len(prefixMetadefNS):]})
		case strings.HasPrefix(k, prefixMetadefRT):
			units = append(units, []string{k})
		}
	}
	slices.SortFunc(units, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	for _, keys := range units {
		if err := m.ctx.Err(); err != nil {
			return err
		}
		b := &kv.Batch{Room: kv.Grows}
		same, anyDst := true, false
		for _, k := range keys {
			ctx, cancel := context.WithTimeout(m.ctx, migrateCallTimeout)
			p, err := m.dst.Get(ctx, k)
			cancel()
			if err != nil {
				return m.dstErr(err)
			}
			v, inSrc := src[k]
			inDst := p.ModRev != 0
			anyDst = anyDst || inDst
			same = same && inSrc == inDst && (!inSrc || bytes.Equal(p.Value, v))
			b.Conds = append(b.Conds, kv.Cond{Key: k})
			if inSrc {
				b.Ops = append(b.Ops, kv.Op{Kind: kv.Put, Key: k, Value: v})
			}
		}
		name := strings.TrimPrefix(strings.TrimPrefix(keys[0], prefixMetadefNS), prefixMetadefRT)
		switch {
		case same:
			m.r.MetadefsSkipped++
		case anyDst:
			m.r.MetadefConflicts = append(m.r.MetadefConflicts, name)
		case m.opts.DryRun:
			m.r.Metadefs++
		default:
			ctx, cancel := context.WithTimeout(m.ctx, migrateCallTimeout)
			_, err := m.dst.Commit(ctx, b)
			cancel()
			if errors.Is(err, kv.ErrConflict) {
				m.r.MetadefConflicts = append(m.r.MetadefConflicts, name)
				continue
			}
			if err != nil {
				return m.dstErr(err)
			}
			m.r.Metadefs++
		}
	}
	return nil
}
