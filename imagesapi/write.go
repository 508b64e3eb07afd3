package imagesapi

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store"
)

// mayWrite answers 403 for a caller that has no uid (a project not
// mapped): it may read public images, nothing more.
func mayWrite(w http.ResponseWriter, r *http.Request, c store.Caller, project string) bool {
	if c == store.Anyone {
		writeError(w, r, http.StatusForbidden, fmt.Sprintf("You are not authorized to complete this action: project %q is not mapped to a uid on this imagefs (--api-project)", project))
		return false
	}
	return true
}

// create is POST /v2/images: an image record (status queued) with the
// attributes given, created in one commit with them (CreateWithID), so a
// refused attribute leaves no image behind.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	if !mayWrite(w, r, c, project) {
		return
	}
	v, ok := readJSON(w, r)
	if !ok {
		return
	}
	body, ok := v.(map[string]any)
	if !ok {
		writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type 'object'", jsonRepr(v)))
		return
	}
	id, _ := body["id"].(string)
	if v, ok := body["id"]; ok && id == "" {
		writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type 'string'", jsonRepr(v)))
		return
	}
	name := ""
	if v, ok := body["name"]; ok && v != nil {
		n, ok := v.(string)
		if !ok {
			writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Provided object does not match schema 'image': %s is not of type 'string'", jsonRepr(v)))
			return
		}
		name = n
	}
	// As Glance's deserializer: read-only and reserved attributes (403)
	// before any value is checked against the schema (400).
	for _, k := range slices.Sorted(maps.Keys(body)) {
		if code, msg := forbiddenAttr(k); code != 0 && k != "id" && k != "name" && k != store.KeyOwner {
			writeError(w, r, code, msg)
			return
		}
	}
	var props []store.KeyValue
	visibility, protected := "shared", "" // Glance's default visibility
	owner, ownerGiven := "", false
	for _, k := range slices.Sorted(maps.Keys(body)) {
		if k == "id" || k == "name" {
			continue
		}
		v, code, msg := settable(k, body[k])
		switch {
		case code != 0:
			writeError(w, r, code, msg)
			return
		case k == store.KeyOwner:
			owner, ownerGiven = v, true
		case ignoredAtStore[k]:
		case k == "visibility":
			visibility = v
		case k == "protected":
			protected = v
		default:
			props = append(props, store.KeyValue{Key: k, Value: v})
		}
	}
	props = append(props, store.KeyValue{Key: store.KeyVisibility, Value: visibility})
	if protected != "" {
		props = append(props, store.KeyValue{Key: store.KeyProtected, Value: protected})
	}
	op, ok := s.createOwner(w, r, c, project, owner, ownerGiven)
	if !ok {
		return
	}
	props = append(props, op...)
	if id == "" {
		id = uuid.NewString()
	}
	if name == "" {
		name = id // a Glance image may have no name; its directory needs one
	}
	// One commit: the image appears with all its attributes or not at all.
	im, err := s.st.CreateWithID(c, id, name, props)
	if err != nil {
		if tagQuotaErr(w, r, err) {
			return
		}
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v2/images/"+im.ID)
	w.Header().Set("OpenStack-image-import-methods", importMethod) // as Glance with import enabled
	writeJSON(w, http.StatusCreated, s.imageJSON(im))
}

// Media types of Glance's PATCH.
const (
	patchV21 = "application/openstack-images-v2.1-json-patch"
	patchV20 = "application/openstack-images-v2.0-json-patch"
)

// patchOp is the operation and path of the JSON-Patch operation m, as
// Glance reads them: v2.1 (draft 10) {"op": OP, "path": PATH}, v2.0
// (draft 4) {OP: PATH}; or Glance's message for a malformed one.
func patchOp(m map[string]any, mt string) (op, path, msg string) {
	if mt == patchV20 {
		for _, k := range []string{"add", "remove", "replace"} {
			if _, ok := m[k]; ok {
				if op != "" {
					return "", "", `Operation objects must contain only one member named "add", "remove", or "replace".`
				}
				op = k
			}
		}
		if op == "" {
			return "", "", `Operation objects must contain exactly one member named "add", "remove", or "replace".`
		}
		path, _ = m[op].(string)
		return op, path, ""
	}
	switch v := m["op"]; v {
	case "add", "replace", "remove":
		op = v.(string)
	case nil:
		return "", "", "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace."
	default:
		return "", "", fmt.Sprintf("Invalid operation: `%v`. It must be one of the following: add, remove, replace.", v)
	}
	p, ok := m["path"]
	if !ok {
		return "", "", "Unable to find 'path' in JSON Schema change"
	}
	path, _ = p.(string)
	return op, path, ""
}

// update is PATCH /v2/images/{id} with a JSON-Patch of add, replace and
// remove operations on top-level attributes, applied in one commit
// (Store.ChangeProperties): a refused patch changes nothing.
func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != patchV21 && mt != patchV20 {
		w.Header().Set("Accept-Patch", patchV20+", "+patchV21)
		writeError(w, r, http.StatusUnsupportedMediaType, "Image PATCH expects Content-Type one of: "+patchV20+", "+patchV21)
		return
	}
	// As Glance: the body and each operation are checked (400, 403 for a
	// read-only or reserved attribute) before the image is looked up.
	v, ok := readJSON(w, r)
	if !ok {
		return
	}
	list, ok := v.([]any)
	if !ok {
		writeError(w, r, http.StatusBadRequest, "Request body must be a JSON array of operation objects.")
		return
	}
	raw := make([]map[string]any, 0, len(list))
	for _, o := range list {
		m, ok := o.(map[string]any)
		if !ok {
			writeError(w, r, http.StatusBadRequest, "Operations must be JSON objects.")
			return
		}
		raw = append(raw, m)
	}
	type step struct {
		op, key, value string
	}
	var steps []step
	for _, m := range raw {
		op, path, msg := patchOp(m, mt)
		if msg != "" {
			writeError(w, r, http.StatusBadRequest, msg)
			return
		}
		value, hasValue := m["value"]
		if !strings.HasPrefix(path, "/") || len(path) < 2 {
			writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Invalid JSON pointer for this resource: '%s'", path))
			return
		}
		parts := strings.Split(path[1:], "/")
		key := strings.ReplaceAll(strings.ReplaceAll(parts[0], "~1", "/"), "~0", "~")
		if len(parts) > 1 {
			if reserved[key] {
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Attribute '%s' is reserved.", key))
			} else {
				writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Invalid JSON pointer for this resource: '%s'", path))
			}
			return
		}
		if op == "remove" {
			switch {
			case key == store.KeyOwner: // Glance's base attribute, not reserved
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Property %s may not be removed.", key))
				return
			case readOnly[key]:
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Attribute '%s' is read-only.", key))
				return
			case reserved[key] || store.IsSystemKey(key):
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Attribute '%s' is reserved.", key))
				return
			case isBase(key) || ignoredAtStore[key]:
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Property %s may not be removed.", key))
				return
			}
			steps = append(steps, step{op, key, ""})
			continue
		}
		if !hasValue {
			writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Operation \"%s\" requires a member named \"value\".", op))
			return
		}
		v, code, msg := settable(key, value)
		if code != 0 {
			writeError(w, r, code, msg)
			return
		}
		if ignoredAtStore[key] {
			continue
		}
		steps = append(steps, step{op, key, v})
	}
	im := s.image(w, r, c)
	if im == nil || !mayWrite(w, r, c, project) {
		return
	}
	// A replace or remove of a custom property the image does not have is
	// 409, as in Glance (on the record as the operations before it leave
	// it); the store applies all the operations in one commit, each under
	// its rules, or none.
	present := map[string]bool{}
	var ops []store.PropertyOp
	for _, st := range steps {
		if st.key == store.KeyOwner {
			if !c.IsRoot() {
				writeError(w, r, http.StatusForbidden, "Owner can't be updated by non admin.")
				return
			}
			st.value = s.storeOwner(st.value)
		}
		p, seen := present[st.key]
		if !seen {
			_, p = im.Property(st.key)
		}
		if !isBase(st.key) && !p && st.op != "add" {
			writeError(w, r, http.StatusConflict, fmt.Sprintf("Property %s does not exist.", st.key))
			return
		}
		if mt == patchV20 && st.op == "add" && (isBase(st.key) || p) {
			// Glance's JSON-Patch draft 4 (v2.0): add is not replace.
			writeError(w, r, http.StatusConflict, fmt.Sprintf("Property %s already present.", st.key))
			return
		}
		present[st.key] = st.op != "remove"
		ops = append(ops, store.PropertyOp{Key: st.key, Value: st.value, Remove: st.op == "remove"})
	}
	if len(ops) > 0 {
		if _, err := s.st.ChangeProperties(c, im.ID, ops); err != nil {
			if errors.Is(err, store.ErrNotFound) && s.st.Get(im.ID) != nil {
				writeError(w, r, http.StatusConflict, err.Error()) // a property removed meanwhile
				return
			}
			if k := formatKeyOf(opKeys(ops)); k != "" && errors.Is(err, store.ErrImmutable) {
				// The image holds data (or is being uploaded): Glance's words.
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("Attribute %s can be only replaced for a queued image.", k))
				return
			}
			if tagQuotaErr(w, r, err) {
				return
			}
			s.fail(w, r, err)
			return
		}
	}
	if im = s.st.GetFor(c, im.ID); im == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("No image found with ID %s", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, s.imageJSON(im))
}

// opKeys lists the keys of ops.
func opKeys(ops []store.PropertyOp) []string {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = op.Key
	}
	return keys
}

// delete is DELETE /v2/images/{id}: 204; a protected image is 403.
func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	im := s.image(w, r, c)
	if im == nil || !mayWrite(w, r, c, project) {
		return
	}
	if err := s.st.Delete(c, im.ID); err != nil {
		if errors.Is(err, store.ErrNotPermitted) && im.Protected {
			writeError(w, r, http.StatusForbidden, fmt.Sprintf("Image %s is protected and cannot be deleted.", im.ID))
			return
		}
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// upload is PUT /v2/images/{id}/file: the body streams into the image's
// upload (the staging file a cp into image.vhd or image.raw writes), 1
// MiB at a time; the end of the body seals it as a cp's close does (the
// inspection its disk_format asks for, the hashes). An image whose
// disk_format or container_format is unset takes no data (400, as
// Glance). A body that stops short (the client went away, fewer
// bytes than its Content-Length, past the size cap) aborts the upload:
// the image is queued again, never active.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	c, project := s.caller(r)
	// As Glance: the media type is checked before the image is looked up.
	if !octetStream(w, r) {
		return
	}
	im := s.image(w, r, c)
	if im == nil || !mayWrite(w, r, c, project) {
		return
	}
	if msg := store.FormatsMissing(im); msg != "" && !im.Status.Sealed() {
		// Glance's 400; the store refuses the same upload (OpenWrite).
		writeError(w, r, http.StatusBadRequest, msg)
		return
	}
	capBytes := s.opts.ImageSizeCap
	if r.ContentLength > capBytes {
		writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("Denying attempt to upload image larger than %d bytes.", capBytes))
		return
	}
	u, err := s.st.OpenWrite(c, im.ID, true)
	if err != nil {
		if errors.Is(err, store.ErrImmutable) || im.Status == store.StatusUploading || im.Status == store.StatusImporting {
			writeError(w, r, http.StatusConflict, fmt.Sprintf("Image status transition from %s to saving is not allowed", im.Status))
			return
		}
		s.fail(w, r, err)
		return
	}
	if off, code, msg := receive(s.idleBody(w, r), u, capBytes, ""); code != 0 {
		if err := s.st.AbortWriter(u, msg); err != nil {
			s.log.Error("api: aborting an upload", "id", im.ID, "err", err)
		}
		s.log.Warn("api upload aborted", "id", im.ID, "bytes", off, "reason", msg)
		writeError(w, r, code, msg)
		return
	}
	cerr := s.st.CloseWriter(u)
	if eerr := s.st.EndWriter(u); cerr == nil {
		cerr = eerr
	}
	if cerr != nil {
		if errors.Is(cerr, store.ErrRefused) {
			what := "VHD"
			if im.DiskFormat == store.DiskFormatRaw {
				what = "raw disk"
			}
			writeError(w, r, http.StatusBadRequest, "The image data is not an acceptable "+what+"; the image is killed: "+killReason(strings.TrimPrefix(cerr.Error(), store.ErrRefused.Error()+": ")))
			return
		}
		s.fail(w, r, cerr)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// uploadBufs are the 1 MiB buffers of uploads in progress.
var uploadBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// fill reads r until buf is full, the body ends (io.EOF, with what came
// before it) or fails.
// octetStream reports whether r's body is application/octet-stream, as
// image data must be; otherwise it answers Glance's 415 "Invalid content
// type T" (T "None" when the header is absent).
func octetStream(w http.ResponseWriter, r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/octet-stream" {
		return true
	}
	if r.Header.Get("Content-Type") == "" {
		mt = "None"
	} else if mt == "" {
		mt = r.Header.Get("Content-Type")
	}
	writeError(w, r, http.StatusUnsupportedMediaType, "Invalid content type "+mt)
	return false
}

// receive writes body into u from offset 0 through a pooled buffer (no
// whole image in memory): the bytes written, and 0 with "" when the body
// ended, else Glance's status code and message for what stopped it (413
// past capBytes, prefix before Glance's "Denying attempt..."; the store's
// code for a refused write, 413 for no space; 400 for a body cut off).
// The caller aborts u on a non-zero code.
func receive(body io.Reader, u *store.Upload, capBytes int64, prefix string) (off int64, code int, msg string) {
	buf := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(buf)
	for {
		n, rerr := fill(body, *buf)
		if n > 0 {
			if off+int64(n) > capBytes {
				return off, http.StatusRequestEntityTooLarge, fmt.Sprintf("%sDenying attempt to upload image larger than %d bytes.", prefix, capBytes)
			}
			if _, err := u.WriteAt((*buf)[:n], off); err != nil {
				code := storeStatus(err)
				if errors.Is(err, store.ErrNoSpace) || strings.Contains(err.Error(), "no space") {
					code = http.StatusRequestEntityTooLarge
				}
				return off, code, "Writing the image data failed: " + err.Error()
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			return off, 0, ""
		}
		if rerr != nil {
			return off, http.StatusBadRequest, fmt.Sprintf("The image data stopped after %d bytes: %v", off, rerr)
		}
	}
}

func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// download is GET /v2/images/{id}/file: the sealed data, with Range
// (206; 416 with Content-Range bytes */SIZE, rangeRefusal) and Content-MD5 (the checksum, on a whole-file answer);
// 204 for an image without data, 403 for a deactivated one (but to the
// admin).
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	c, _ := s.caller(r)
	im := s.image(w, r, c)
	if im == nil {
		return
	}
	f, err := s.st.OpenRead(c, im.ID)
	if err != nil {
		if errors.Is(err, store.ErrPermission) {
			switch im.Status {
			case store.StatusDeactivated:
				writeError(w, r, http.StatusForbidden, "The requested image has been deactivated. Image data download is forbidden.")
				return
			case store.StatusQueued, store.StatusSaving, store.StatusKilled, store.StatusUploading, store.StatusImporting:
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	if h := r.Header.Get("Range"); h != "" && im.Size >= 0 {
		if msg := rangeRefusal(h); msg != "" {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", im.Size))
			writeError(w, r, http.StatusRequestedRangeNotSatisfiable, msg)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if im.Checksum != "" && r.Header.Get("Range") == "" && r.Header.Get("Content-Range") == "" {
		w.Header().Set("Content-MD5", im.Checksum)
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// action is deactivate or reactivate: the owner's or the admin's status
// change from `from` to `to` (the store's rule), 204; already there: 204;
// from another status: 400 (for those who may change it; 403 for others).
func (s *Server) action(from, to store.Status, verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, _ := s.caller(r)
		im := s.image(w, r, c)
		if im == nil {
			return
		}
		var err error
		switch im.Status {
		case to:
			err = s.st.MayWriteProperty(c, im.ID, store.KeyStatus) // the owner or root: a no-op
		case from:
			err = s.st.SetProperty(c, im.ID, store.KeyStatus, string(to), store.SetAny)
		default:
			if err = s.st.MayWriteProperty(c, im.ID, store.KeyStatus); err == nil || c.Owns(im) {
				writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Not allowed to %s image in status '%s'", verb, im.Status))
				return
			}
		}
		if err != nil {
			if errors.Is(err, store.ErrImmutable) || errors.Is(err, store.ErrNotPermitted) {
				writeError(w, r, http.StatusForbidden, fmt.Sprintf("You are not authorized to complete %s_image action.", verb))
				return
			}
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) deactivate(w http.ResponseWriter, r *http.Request) {
	s.action(store.StatusActive, store.StatusDeactivated, "deactivate")(w, r)
}

func (s *Server) reactivate(w http.ResponseWriter, r *http.Request) {
	s.action(store.StatusDeactivated, store.StatusActive, "reactivate")(w, r)
}
