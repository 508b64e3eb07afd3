package imagesapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store"
)

// Glance's interoperable image import, method glance-direct (the store's
// rules: store/import.go): PUT .../stage, POST .../import, the image's
// tasks (GET .../tasks); and the request id every response carries.

// importMethod is the one import method imagefs offers (/v2/info/import).
const importMethod = "glance-direct"

// requestIDKey is the request context's key of its request id.
type requestIDKey struct{}

// withRequestID gives r a request id, req-<uuid>, sent back in the
// X-Openstack-Request-Id header of its response (as oslo.middleware's
// RequestId does for Glance, on every response).
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := "req-" + uuid.NewString()
	w.Header().Set("X-Openstack-Request-Id", id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// requestID is r's request id (withRequestID), or "".
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// userID is the caller's user id: the token's in keystone mode, the
// X-User-Id header in noauth mode (as Glance's noauth context).
func (s *Server) userID(r *http.Request) string {
	if s.keystone != nil {
		if id, _ := r.Context().Value(identityKey{}).(*Identity); id != nil {
			return id.UserID
		}
		return ""
	}
	return r.Header.Get("X-User-Id")
}

// stage is PUT /v2/images/{id}/stage: the body streams into a staging
// file as PUT .../file's does (1 MiB at a time, never the whole image in
// memory), but is not sealed: the image is uploading until its import. A
// body that stops short (client gone, shorter than its Content-Length,
// past the size cap) drops the staged data and the image is queued
// again. Glance's codes: 415 (not application/octet-stream), 404, 403
// (not the owner), 409 (not queued: "Image status transition from S to
// uploading is not allowed"), 413 (size cap), 204.
func (s *Server) stage(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	if !octetStream(w, r) {
		return
	}
	im := s.image(w, r, c)
	if im == nil || !mayWrite(w, r, c, project) {
		return
	}
	capBytes := s.opts.ImageSizeCap
	if r.ContentLength > capBytes {
		writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The incoming image is too large: Denying attempt to upload image larger than %d bytes.", capBytes))
		return
	}
	u, err := s.st.OpenStage(c, im.ID)
	if err != nil {
		switch {
		case store.IsNotQueued(err):
			cur := im.Status
			if now := s.st.Get(im.ID); now != nil {
				cur = now.Status
			}
			writeError(w, r, http.StatusConflict, fmt.Sprintf("Image status transition from %s to uploading is not allowed", cur))
		case errors.Is(err, store.ErrInvalid) && store.FormatsMissing(im) != "":
			writeError(w, r, http.StatusBadRequest, store.FormatsMissing(im))
		default:
			s.fail(w, r, err)
		}
		return
	}
	if off, code, msg := receive(s.idleBody(w, r), u, capBytes, "The incoming image is too large: "); code != 0 {
		if err := s.st.AbortStage(u, msg); err != nil {
			s.log.Error("api: aborting a stage", "id", im.ID, "err", err)
		}
		s.log.Warn("api stage aborted", "id", im.ID, "bytes", off, "reason", msg)
		writeError(w, r, code, msg)
		return
	}
	if err := s.st.EndStage(u); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// importImage is POST /v2/images/{id}/import with {"method": {"name":
// "glance-direct"}}: 202, and the staged data is sealed in the background
// (store.Import: active, or queued again with the task failed). Glance's
// checks, in its order: the body (400: no method, no name, a method not
// offered, all_stores or all_stores_must_succeed not a boolean), the
// image (404), its status (409: active, or not staged), the owner (403),
// all_stores_must_succeed false (400: a single store); stores and
// all_stores are otherwise ignored, as by a Glance with one store. An
// import on another host than the stage's is 409 naming that host.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	v, ok := readJSON(w, r)
	if !ok {
		return
	}
	body, _ := v.(map[string]any)
	method, ok := body["method"]
	if !ok {
		writeError(w, r, http.StatusBadRequest, "Import request requires a 'method' field.")
		return
	}
	mm, _ := method.(map[string]any)
	name, ok := mm["name"]
	if !ok {
		writeError(w, r, http.StatusBadRequest, "Import request requires a 'name' field.")
		return
	}
	if name != importMethod {
		writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Unknown import method name '%v'.", name))
		return
	}
	mustSucceed := true
	if v, ok := body["all_stores_must_succeed"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			writeError(w, r, http.StatusBadRequest, "'all_stores_must_succeed' must be boolean value only")
			return
		}
		mustSucceed = b
	}
	if v, ok := body["all_stores"]; ok {
		if _, isBool := v.(bool); !isBool {
			writeError(w, r, http.StatusBadRequest, "'all_stores' must be boolean value only")
			return
		}
	}
	im := s.image(w, r, c)
	if im == nil {
		return
	}
	switch im.Status {
	case store.StatusActive:
		writeError(w, r, http.StatusConflict, "Image with status active cannot be target for import")
		return
	case store.StatusUploading:
	default:
		writeError(w, r, http.StatusConflict, "Image needs to be staged before 'glance-direct' method can be used")
		return
	}
	if !mayWrite(w, r, c, project) {
		return
	}
	if !mustSucceed {
		uri, _ := mm["uri"].(string)
		if uri == "" {
			uri = "None"
		}
		writeError(w, r, http.StatusBadRequest, "All_stores_must_succeed can only be set with enabled_backends "+uri)
		return
	}
	raw, _ := json.Marshal(body)
	task := store.ImportTask{ID: uuid.NewString(), Owner: project, UserID: s.userID(r), RequestID: requestID(r), Request: raw}
	if err := s.st.Import(c, im.ID, task, nil); err != nil {
		switch {
		case errors.Is(err, store.ErrNotStaged):
			writeError(w, r, http.StatusConflict, "Image needs to be staged before 'glance-direct' method can be used")
		case errors.Is(err, store.ErrTooBig):
			writeError(w, r, http.StatusRequestEntityTooLarge, err.Error())
		default:
			s.fail(w, r, err)
		}
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// taskTime is the format of a task's times in Glance's answers (its JSON
// serializer's datetime: microseconds, no zone).
const taskTime = "2006-01-02T15:04:05.000000"

// imageTasks is GET /v2/images/{id}/tasks: the image's import tasks (API
// v2.12), as Glance lists them: 404 for an image the caller does not see;
// the admin sees every task, others those their project asked for.
func (s *Server) imageTasks(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	id := r.PathValue("id")
	tasks, err := s.st.ImportTasks(c, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, r, http.StatusNotFound, "The resource could not be found.")
			return
		}
		s.fail(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(tasks))
	for _, t := range tasks {
		if !c.IsRoot() && t.Owner != project {
			continue
		}
		out = append(out, s.taskJSON(id, t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": out})
}

// taskJSON is t, a task of image id, as Glance's task of type
// api_image_import.
func (s *Server) taskJSON(id string, t store.ImportTask) map[string]any {
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	var req any
	if len(t.Request) > 0 {
		json.Unmarshal(t.Request, &req)
	}
	var result any
	if t.Status == store.TaskSuccess {
		result = map[string]any{"image_id": id}
	}
	var expires any
	if !t.ExpiresAt.IsZero() {
		expires = t.ExpiresAt.UTC().Format(taskTime)
	}
	return map[string]any{
		"id":         t.ID,
		"type":       "api_image_import",
		"status":     t.Status,
		"owner":      nullable(t.Owner),
		"user_id":    nullable(t.UserID),
		"request_id": nullable(t.RequestID),
		"image_id":   id,
		"input":      map[string]any{"image_id": id, "import_req": req, "backend": []any{nil}},
		"result":     result,
		"message":    t.Message,
		"created_at": t.CreatedAt.UTC().Format(taskTime),
		"updated_at": t.UpdatedAt.UTC().Format(taskTime),
		"expires_at": expires,
		"deleted_at": nil,
		"deleted":    false,
	}
}
