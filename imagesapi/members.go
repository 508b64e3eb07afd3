package imagesapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/imagefs/imagefs/store"
)

// The image members API (Glance's glance/api/v2/image_members.py):
// GET and POST /v2/images/{id}/members, GET, PUT and DELETE
// /v2/images/{id}/members/{member_id}, and the member schemas. Every
// rule is the store's (store/members.go); this face translates project
// ids and uids, and Glance's messages and status codes.

func (s *Server) memberRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /v2/schemas/member", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, memberSchema()) })
	m.HandleFunc("GET /v2/schemas/members", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, membersSchema()) })
	m.HandleFunc("GET /v2/images/{id}/members", s.listMembers)
	m.HandleFunc("POST /v2/images/{id}/members", s.addMember)
	m.HandleFunc("GET /v2/images/{id}/members/{member}", s.showMember)
	m.HandleFunc("PUT /v2/images/{id}/members/{member}", s.updateMember)
	m.HandleFunc("DELETE /v2/images/{id}/members/{member}", s.deleteMember)
}

// memberImage returns image id as c sees it by id, or answers 404 with
// the message of Glance's member controller.
func (s *Server) memberImage(w http.ResponseWriter, r *http.Request, c store.Caller) *store.Image {
	id := r.PathValue("id")
	im := s.st.GetFor(c, id)
	if im == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("Image %s not found.", id))
	}
	return im
}

// storeMember is the store's id of API member p: the uid of a mapped
// project in decimal, else p as given (Glance takes any project id).
func (s *Server) storeMember(p string) string {
	if uid, ok := s.opts.Projects[p]; ok {
		return strconv.FormatUint(uint64(uid), 10)
	}
	return p
}

// memberOf is the store's id of the member named p in a request path on
// image im: p's uid if the image has that member, else p as given (a
// project added before it was mapped to a uid).
func (s *Server) memberOf(im *store.Image, p string) string {
	id := s.storeMember(p)
	for _, m := range im.Members() {
		if m.ID == id {
			return id
		}
	}
	for _, m := range im.Members() {
		if m.ID == p {
			return p
		}
	}
	return id
}

// apiMember is the member id the API shows for the store's id: the
// project of a uid mapped to one, else the id as stored.
func (s *Server) apiMember(id string) string {
	if n, err := strconv.ParseUint(id, 10, 32); err == nil {
		return s.owner(uint32(n))
	}
	return id
}

// memberJSON is m of image id as Glance's member entity.
func (s *Server) memberJSON(id string, m store.Member) map[string]any {
	return map[string]any{
		"member_id":  s.apiMember(m.ID),
		"image_id":   id,
		"status":     string(m.Status),
		"created_at": glanceTime(m.CreatedAt),
		"updated_at": glanceTime(m.UpdatedAt),
		"schema":     "/v2/schemas/member",
	}
}

// memberBody reads a member request's body, a JSON object, and returns
// field key of it; it answers 400 as Glance's deserializer does: no body,
// not an object (typeMsg), no key (missing).
func memberBody(w http.ResponseWriter, r *http.Request, key, typeMsg, missing string) (any, bool) {
	v, ok := readJSON(w, r)
	if !ok {
		return nil, false
	}
	body, isMap := v.(map[string]any)
	if !isMap {
		writeError(w, r, http.StatusBadRequest, typeMsg)
		return nil, false
	}
	f, has := body[key]
	if !has {
		writeError(w, r, http.StatusBadRequest, missing)
		return nil, false
	}
	return f, true
}

// memberFail answers a refused member call as Glance: 403 with forbidden
// for a policy refusal (not shared, not the owner, the owner setting a
// status), 404 for a member that is not there, the store's mapping
// otherwise.
func (s *Server) memberFail(w http.ResponseWriter, r *http.Request, err error, forbidden, member string) {
	id := r.PathValue("id")
	switch {
	case errors.Is(err, store.ErrNoMember):
		s.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "status", 404, "err", err)
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("%s not found in the member list of the image %s.", member, id))
	case errors.Is(err, store.ErrNotFound):
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("Image %s not found.", id))
	case errors.Is(err, store.ErrNotPermitted), errors.Is(err, store.ErrPermission):
		s.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "status", 403, "err", err)
		writeError(w, r, http.StatusForbidden, forbidden)
	default:
		s.fail(w, r, err)
	}
}

// listMembers is GET /v2/images/{id}/members: all members for the owner
// and the admin, its own membership for a member; 403 for an image that
// is not shared.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	im := s.memberImage(w, r, c)
	if im == nil {
		return
	}
	list, err := s.st.MembersFor(c, im.ID)
	if err != nil {
		s.memberFail(w, r, err, fmt.Sprintf("Not allowed to list members for image %s: Only shared images have members.", im.ID), "")
		return
	}
	out := make([]map[string]any, 0, len(list))
	for _, m := range list {
		out = append(out, s.memberJSON(im.ID, m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": out, "schema": "/v2/schemas/members"})
}

// addMember is POST /v2/images/{id}/members {"member": PROJECT}: the
// owner (or the admin) adds a member, pending; 200 with the member.
func (s *Server) addMember(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	v, ok := memberBody(w, r, "member", `Expected a member in the form: {"member": "image_id"}`, "Member to be added not specified")
	if !ok {
		return
	}
	p, isStr := v.(string)
	switch {
	case v == nil || isStr && p == "":
		writeError(w, r, http.StatusBadRequest, "Member can't be empty")
		return
	case !isStr:
		writeError(w, r, http.StatusBadRequest, `Expected a member in the form: {"member": "image_id"}`)
		return
	}
	im := s.memberImage(w, r, c)
	if im == nil {
		return
	}
	m, err := s.st.AddMember(c, im.ID, s.storeMember(p))
	switch {
	case errors.Is(err, store.ErrExists):
		writeError(w, r, http.StatusConflict, fmt.Sprintf("Member %s is duplicated for image %s", p, im.ID))
		return
	case errors.Is(err, store.ErrQuota):
		writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("Image member limit exceeded for image %s: %v:", im.ID, err))
		return
	case err != nil:
		s.memberFail(w, r, err, fmt.Sprintf("Not allowed to create members for image %s.", im.ID), p)
		return
	}
	writeJSON(w, http.StatusOK, s.memberJSON(im.ID, m))
}

// showMember is GET /v2/images/{id}/members/{member}: 404 (not 403, as
// Glance hides it) for an image that is not shared or a member the
// caller may not see.
func (s *Server) showMember(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	im := s.memberImage(w, r, c)
	if im == nil {
		return
	}
	p := r.PathValue("member")
	m, err := s.st.Member(c, im.ID, s.memberOf(im, p))
	if err != nil {
		if errors.Is(err, store.ErrNotPermitted) {
			writeError(w, r, http.StatusNotFound, "Only shared images have members.")
			return
		}
		s.memberFail(w, r, err, "", p)
		return
	}
	writeJSON(w, http.StatusOK, s.memberJSON(im.ID, m))
}

// updateMember is PUT /v2/images/{id}/members/{member} {"status": S}:
// the member itself (or the admin) sets its status; 200 with the member.
func (s *Server) updateMember(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	v, ok := memberBody(w, r, "status", `Expected a status in the form: {"status": "status"}`, "Status not specified")
	if !ok {
		return
	}
	im := s.memberImage(w, r, c)
	if im == nil {
		return
	}
	status, _ := v.(string)
	if _, isStr := v.(string); !isStr {
		status = fmt.Sprint(v) // not a status: the store refuses it (400) after its other checks
	}
	p := r.PathValue("member")
	m, err := s.st.SetMemberStatus(c, im.ID, s.memberOf(im, p), store.MemberStatus(status))
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			writeError(w, r, http.StatusBadRequest, `Incorrect request: Status must be "pending", "accepted" or "rejected".`)
			return
		}
		s.memberFail(w, r, err, fmt.Sprintf("Not allowed to update members for image %s.", im.ID), p)
		return
	}
	writeJSON(w, http.StatusOK, s.memberJSON(im.ID, m))
}

// deleteMember is DELETE /v2/images/{id}/members/{member}: the owner (or
// the admin) removes a member; 204.
func (s *Server) deleteMember(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	im := s.memberImage(w, r, c)
	if im == nil {
		return
	}
	p := r.PathValue("member")
	if err := s.st.RemoveMember(c, im.ID, s.memberOf(im, p)); err != nil {
		s.memberFail(w, r, err, fmt.Sprintf("Not allowed to delete members for image %s.", im.ID), p)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// memberSchema is GET /v2/schemas/member, as Glance publishes it.
func memberSchema() map[string]any {
	return map[string]any{
		"name":                 "member",
		"additionalProperties": false,
		"properties": map[string]any{
			"member_id": map[string]any{"type": "string", "description": "An identifier for the image member (tenantId)"},
			"image_id": map[string]any{"type": "string", "description": "An identifier for the image",
				"pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
			"created_at": map[string]any{"type": "string", "description": "Date and time of image member creation"},
			"updated_at": map[string]any{"type": "string", "description": "Date and time of last modification of image member"},
			"status": map[string]any{"type": "string", "description": "The status of this image member",
				"enum": []string{"pending", "accepted", "rejected"}},
			"schema": map[string]any{"readOnly": true, "type": "string"},
		},
	}
}

// membersSchema is GET /v2/schemas/members: a list of members (Glance's
// CollectionSchema).
func membersSchema() map[string]any {
	return map[string]any{
		"name": "members",
		"properties": map[string]any{
			"members": map[string]any{"type": "array", "items": memberSchema()},
			"first":   map[string]any{"type": "string"},
			"next":    map[string]any{"type": "string"},
			"schema":  map[string]any{"type": "string"},
		},
		"links": []map[string]string{
			{"rel": "first", "href": "{first}"},
			{"rel": "next", "href": "{next}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	}
}
