package imagesapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/imagefs/imagefs/store"
)

// Image tags, as Glance's glance/api/v2/image_tags.py: PUT and DELETE
// /v2/images/{id}/tags/{tag}, 204 each. The set and its rules (each tag
// 1-255 characters without control characters, at most the tag quota per
// image) are the store's (store/tags.go).

// tagSchemaErr is Glance's 400 message for a tag its image schema refuses
// (items of maxLength 255 characters), or "".
func tagSchemaErr(tag string) string {
	if utf8.RuneCountInString(tag) > store.MaxTagChars {
		return fmt.Sprintf("Provided object does not match schema 'image': %s is too long", jsonRepr(tag))
	}
	return ""
}

// hasTags reports whether im has every tag of tags (Glance's tag filter).
func hasTags(im *store.Image, tags []string) bool {
	for _, t := range tags {
		if !im.HasTag(t) {
			return false
		}
	}
	return true
}

// tagQuotaErr answers 413 with Glance's message when err is the store's
// tag quota (a create or patch with too many tags), and reports whether
// it did.
func tagQuotaErr(w http.ResponseWriter, r *http.Request, err error) bool {
	if !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), "image tags") {
		return false
	}
	writeError(w, r, http.StatusRequestEntityTooLarge, strings.TrimPrefix(err.Error(), store.ErrQuota.Error()+": "))
	return true
}

// addTag is PUT /v2/images/{id}/tags/{tag}: 204, also when the image has
// the tag already; 400 for a tag the schema or the store refuses, 404 for
// an image the caller does not see, 403 for one it may not change, 413
// past the tag quota.
func (s *Server) addTag(w http.ResponseWriter, r *http.Request) {
	id, tag := r.PathValue("id"), r.PathValue("tag")
	// As Glance: the tag is checked against the schema first.
	if msg := tagSchemaErr(tag); msg != "" {
		writeError(w, r, http.StatusBadRequest, msg)
		return
	}
	s.changeTag(w, r, "update", func(c store.Caller) error { return s.st.AddTag(c, id, tag) })
}

// deleteTag is DELETE /v2/images/{id}/tags/{tag}: 204; 404 for an image
// the caller does not see or a tag the image does not have, 403 for an
// image it may not change.
func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) {
	id, tag := r.PathValue("id"), r.PathValue("tag")
	s.changeTag(w, r, "delete", func(c store.Caller) error { return s.st.RemoveTag(c, id, tag) })
}

// changeTag runs a tag change for the caller and answers with Glance's
// status and message for its outcome (verb: "update" or "delete", as in
// Glance's messages).
func (s *Server) changeTag(w http.ResponseWriter, r *http.Request, verb string, change func(store.Caller) error) {
	c, project := s.caller(r)
	id := r.PathValue("id")
	notFound := func() { writeError(w, r, http.StatusNotFound, fmt.Sprintf("Image %s not found.", id)) }
	if s.st.GetFor(c, id) == nil {
		notFound()
		return
	}
	if !mayWrite(w, r, c, project) {
		return
	}
	err := change(c)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
		return
	case errors.Is(err, store.ErrNoTag):
		writeError(w, r, http.StatusNotFound, "The resource could not be found.")
	case errors.Is(err, store.ErrNotFound):
		notFound()
	case errors.Is(err, store.ErrPermission), errors.Is(err, store.ErrNotPermitted), errors.Is(err, store.ErrImmutable):
		writeError(w, r, http.StatusForbidden, fmt.Sprintf("Not allowed to %s tags for image %s.", verb, id))
	case errors.Is(err, store.ErrInvalid):
		writeError(w, r, http.StatusBadRequest, "Could not update image: "+err.Error())
	case errors.Is(err, store.ErrQuota) && strings.Contains(err.Error(), "image tags"):
		writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("Image tag limit exceeded for image %s: %s:", id,
			strings.TrimPrefix(err.Error(), store.ErrQuota.Error()+": ")))
	default:
		s.fail(w, r, err)
		return
	}
	s.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "err", err)
}
