package imagesapi

import (
	"fmt"
	"net/http"

	"github.com/imagefs/imagefs/store"
)

// infoImport is GET /v2/info/import: the interoperable import methods, as
// Glance lists them: glance-direct only (stage, then import: import.go);
// not web-download, glance-download or copy-image.
func (s *Server) infoImport(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"import-methods": map[string]any{
		"description": "Import methods available.",
		"type":        "array",
		"value":       []string{importMethod},
	}})
}

// infoStores is GET /v2/info/stores: 404, as Glance without multiple
// stores (enabled_backends) answers; imagefs has one data store.
func (s *Server) infoStores(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, http.StatusNotFound, "Multi backend is not supported at this site.")
}

// forbiddenAttr is Glance's 403 for an attribute no caller may set
// (read-only, reserved, or a system property of the store), or 0.
func forbiddenAttr(key string) (int, string) {
	switch {
	case readOnly[key]:
		return http.StatusForbidden, fmt.Sprintf("Attribute '%s' is read-only.", key)
	case reserved[key], store.IsSystemKey(key) && !ignoredAtStore[key]:
		return http.StatusForbidden, fmt.Sprintf("Attribute '%s' is reserved.", key)
	}
	return 0, ""
}
