package imagesapi

import (
	"fmt"
	"net/http"

	"github.com/imagefs/imagefs/store"
)

// infoImport is GET /v2/info/import: the interoperable import methods, as
// Glance lists them. imagefs has none (no stage/import: data goes in with
// PUT .../file), as a Glance whose enabled_import_methods is empty; a
// client (Tempest among them) then does not try one.
func (s *Server) infoImport(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"import-methods": map[string]any{
		"description": "Import methods available.",
		"type":        "array",
		"value":       []string{},
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
