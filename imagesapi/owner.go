package imagesapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/imagefs/imagefs/store"
)

// The owner of an image through the API (the rule is the store's:
// store/owner.go). Glance keeps any project id as the owner; imagefs
// keeps a uid, or a project that no [api] project line maps. Only the
// admin (root) sets it: in a create (any owner; a member gets 403 for an
// owner other than its own project, as Glance's "You are not permitted
// to create images owned by ..."), and by a patch's add or replace of
// /owner (a member gets Glance's 403 "Owner can't be updated by non
// admin."). The admin's own images are its token's project's, as in
// Glance; with no project (noauth without headers) they are root's ("0").

// ownerValue checks an owner of a create or a patch against Glance's
// schema (a string of at most 255 characters, or null): the value, with
// null as "" (no owner: root's), or the status and message.
func ownerValue(v any) (string, int, string) {
	if v == nil {
		return "", 0, ""
	}
	o, ok := v.(string)
	if !ok {
		return "", http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type 'null', 'string'", jsonRepr(v))
	}
	if len([]rune(o)) > store.MaxProjectBytes {
		return "", http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is too long", jsonRepr(v))
	}
	return o, 0, ""
}

// storeOwner is the store's owner value (store.ParseOwner's form) of the
// API's owner o: a mapped project is its uid; "" (null) is root, uid 0;
// anything else as given (a decimal uid, as the API shows an unmapped
// uid's images; else a project id).
func (s *Server) storeOwner(o string) string {
	if o == "" {
		return "0"
	}
	if uid, ok := s.opts.Projects[o]; ok {
		return strconv.FormatUint(uint64(uid), 10)
	}
	return o
}

// ownerOf is the owner field of im: its project, else its uid's project
// (a mapped uid), else the uid in decimal (root's images: "0").
func (s *Server) ownerOf(im *store.Image) string {
	if im.OwnerProject != "" {
		return im.OwnerProject
	}
	return s.owner(im.Owner)
}

// createOwner is the owner property a create by c (of project) adds:
// the owner the body gives (given: whether it gives one) for the admin,
// else the admin's project; none for a member, whose image is its own.
// A member that names another owner gets Glance's 403 (false).
func (s *Server) createOwner(w http.ResponseWriter, r *http.Request, c store.Caller, project, owner string, given bool) ([]store.KeyValue, bool) {
	if !c.IsRoot() {
		if given && owner != project {
			shown := owner
			if owner == "" {
				shown = "None"
			}
			writeError(w, r, http.StatusForbidden, fmt.Sprintf("You are not permitted to create images owned by '%s'.", shown))
			return nil, false
		}
		return nil, true
	}
	if !given {
		if project == "" {
			return nil, true // root's own (noauth without a project)
		}
		owner = project
	}
	return []store.KeyValue{{Key: store.KeyOwner, Value: s.storeOwner(owner)}}, true
}
