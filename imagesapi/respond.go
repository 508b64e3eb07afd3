package imagesapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagefs/imagefs/store"
)

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as Python's json: <, > and & as they are
	b := buf.Bytes()
	if err := enc.Encode(v); err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"message": "encoding the response failed"}`)
	} else {
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

// writeError answers with an error as Glance's error pages do (webob's
// HTTPException): HTML to a client that accepts it or says nothing (the
// openstack CLI shows its text), JSON {"message", "code", "title"} to one
// that prefers JSON, else plain text "STATUS\n\nMESSAGE". r may be nil
// (HTML).
func writeError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	status := fmt.Sprintf("%d %s", code, http.StatusText(code))
	var ctype, body string
	switch errorFormat(r) {
	case "json":
		writeJSON(w, code, map[string]string{"message": msg + "<br /><br />\n\n", "code": status, "title": http.StatusText(code)})
		return
	case "html":
		ctype = "text/html; charset=UTF-8"
		body = "<html>\n <head>\n  <title>" + status + "</title>\n </head>\n <body>\n  <h1>" + status +
			"</h1>\n  " + htmlText.Replace(msg) + "<br /><br />\n\n\n\n </body>\n</html>"
	default:
		ctype = "text/plain; charset=UTF-8"
		body = status + "\n\n" + msg + "\n\n\n\n"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// htmlText escapes a message for an HTML error page (quotes stay
// readable for the clients that show the page's text).
var htmlText = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// errorFormat is webob's choice of an error page's format by the Accept
// header: the first of text/html and application/json the client
// accepts (any, with no header or */*), else plain text.
func errorFormat(r *http.Request) string {
	if r == nil || r.Header.Get("Accept") == "" {
		return "html"
	}
	htmlOK, jsonOK := false, false
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") && !strings.Contains(params, "q=0.") {
			continue
		}
		switch strings.TrimSpace(mt) {
		case "*/*", "text/*", "text/html":
			htmlOK = true
		case "application/*", "application/json":
			jsonOK = true
		}
	}
	switch {
	case htmlOK:
		return "html"
	case jsonOK:
		return "json"
	}
	return "plain"
}

// readJSON reads r's body (at most MaxBodyBytes) as Glance's
// JSONRequestDeserializer does and returns it decoded (a
// map[string]any or a []any). It answers and returns false as Glance
// does: 413 when too large; 400 "Body expected in request." with no
// body (Content-Length 0, not chunked), "Malformed JSON in request
// body." when it is not JSON (or not UTF-8), "Unexpected body type. Expected
// list/dict." for a JSON scalar. The Content-Type is not looked at (as
// Glance: a create's body is JSON whatever its media type says).
func readJSON(w http.ResponseWriter, r *http.Request) (any, bool) {
	if r.ContentLength > MaxBodyBytes {
		writeError(w, r, http.StatusRequestEntityTooLarge, "Request is too large.")
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, r, http.StatusRequestEntityTooLarge, "Request is too large.")
		return nil, false
	case err != nil:
		writeError(w, r, http.StatusBadRequest, "Could not read the request body: "+err.Error())
		return nil, false
	case len(b) == 0 && len(r.TransferEncoding) == 0:
		writeError(w, r, http.StatusBadRequest, "Body expected in request.")
		return nil, false
	}
	var v any
	// Not UTF-8 is malformed, as Glance's strict decode: encoding/json
	// would take each bad byte as U+FFFD and keep a name or property
	// other than the one sent.
	if err := json.Unmarshal(b, &v); err != nil || !utf8.Valid(b) {
		writeError(w, r, http.StatusBadRequest, "Malformed JSON in request body.")
		return nil, false
	}
	switch v.(type) {
	case map[string]any, []any:
		return v, true
	}
	writeError(w, r, http.StatusBadRequest, "Unexpected body type. Expected list/dict.")
	return nil, false
}

// glanceTime is Glance's timestamp format: UTC, seconds, Z.
func glanceTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// imageJSON is im as Glance's image entity: its core fields with Glance's
// types (numbers as numbers, null when unset), its extra properties as
// top-level strings, and the links.
// The list writes the same bytes without the map (appendImageJSON,
// listfast.go): a field added here is added there too
// (TestListJSONAsMaps fails until it is).
func (s *Server) imageJSON(im *store.Image) map[string]any {
	m := make(map[string]any, 24+len(im.Extra))
	for k, v := range im.Extra {
		// members: served by the members API; the import's bookkeeping by
		// .../tasks (and Glance hides its stage host too).
		if k != store.KeyMembers && k != store.KeyImportTasks && k != store.KeyStageHost {
			m[k] = v
		}
	}
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	size := func(n int64) any {
		if n < 0 {
			return nil
		}
		return n
	}
	m["id"] = im.ID
	m["name"] = im.Name
	m["status"] = string(im.Status)
	m["visibility"] = string(im.Visibility)
	m["protected"] = im.Protected
	m["os_hidden"] = im.Hidden()
	m["checksum"] = nullable(im.Checksum)
	m["os_hash_algo"] = nullable(im.OSHashAlgo)
	m["os_hash_value"] = nullable(im.OSHashValue)
	m["owner"] = s.ownerOf(im)
	m["size"] = size(im.Size)
	m["virtual_size"] = size(im.VirtualSize)
	m["min_ram"] = im.MinRAM
	m["min_disk"] = im.MinDisk
	m["disk_format"] = nullable(im.DiskFormat)
	m["container_format"] = nullable(im.ContainerFormat)
	m["created_at"] = glanceTime(im.CreatedAt)
	m["updated_at"] = glanceTime(im.UpdatedAt)
	m["tags"] = im.Tags()
	m["self"] = "/v2/images/" + im.ID
	m["file"] = "/v2/images/" + im.ID + "/file"
	m["schema"] = "/v2/schemas/image"
	return m
}

// versions answers the versions document (300 at /, 200 at /versions).
func (s *Server) versions(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		href := "http://" + r.Host + "/v2/"
		if r.TLS != nil {
			href = "https://" + r.Host + "/v2/"
		}
		// Glance's list without an image cache and without multiple
		// stores (neither is served here): 2.15 current, 2.9, 2.7 to 2.0.
		var vs []map[string]any
		for i, v := range []string{"2.15", "2.9", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0"} {
			status := "SUPPORTED"
			if i == 0 {
				status = "CURRENT"
			}
			vs = append(vs, map[string]any{
				"id": "v" + v, "status": status,
				"links": []map[string]string{{"rel": "self", "href": href}},
			})
		}
		writeJSON(w, code, map[string]any{"versions": vs})
	}
}
