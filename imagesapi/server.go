// Package imagesapi serves the catalog of a store over HTTP as OpenStack
// Glance's Images API v2 (as Glance 25 serves it): the versions document,
// /v2/images (list with filters, create, show, JSON-Patch update, delete),
// image data (PUT and GET .../file), deactivate and reactivate, tags, the image
// schemas and /healthcheck; and the metadata definitions API
// (/v2/metadefs, /v2/schemas/metadefs/*: metadefs.go) over the store's
// metadefs (store/metadefs.go). It is a thin face, like fs/: every rule
// (visibility, ownership, protected, system properties, immutability, the
// VHD inspection at seal, quotas) is the store's, and an upload goes
// through the same staging and seal as a cp into image.vhd.
//
// Identity: AuthKeystone validates each request's X-Auth-Token against
// Keystone (Validator) and takes the caller's project, user and roles from
// it; AuthNoAuth trusts identity headers, for a trusted loopback.
package imagesapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagefs/imagefs/store"
)

// AuthNoAuth trusts the identity headers of each request (X-Tenant-Id or
// X-Project-Id, X-Roles); see Server.caller.
const AuthNoAuth = "noauth"

// Limits of a request (Glance's defaults where it has one).
const (
	// MaxBodyBytes bounds a JSON request body (oslo's sizelimit default,
	// max_request_body_size 114688 bytes); larger is 413.
	MaxBodyBytes = 114688
	// MaxHeaderBytes bounds the request line and headers together (Go's
	// server allows 4 KiB more); more is 431
	// (Glance's max_header_line is 16384 per line).
	MaxHeaderBytes = 64 << 10
	// DefaultImageSizeCap is Glance's image_size_cap (1 TiB): a larger
	// upload is 413 and the image stays queued.
	DefaultImageSizeCap = 1 << 40
	// defaultLimit and maxLimit are Glance's limit_param_default and
	// api_limit_max for a list page.
	defaultLimit = 25
	maxLimit     = 1000
)

// Options configure a Server.
type Options struct {
	// Auth is the identity mode: AuthNoAuth or AuthKeystone.
	Auth string
	// Keystone is how AuthKeystone reaches Keystone (required with it,
	// ignored otherwise).
	Keystone *KeystoneConfig
	// Projects maps a project id (X-Tenant-Id) to the uid that owns its
	// images on the mount. An unmapped project sees only public images.
	Projects map[string]uint32
	// ImageSizeCap bounds an upload in bytes; 0 means DefaultImageSizeCap.
	ImageSizeCap int64
	// ClientSocketTimeout is the no-progress limit of an image body (PUT
	// .../file and .../stage): no byte for this long cuts the upload off
	// (400, the image queued again); the total upload time is not
	// bounded. 0 means DefaultClientSocketTimeout (Glance's 900 s);
	// negative means none (Glance's client_socket_timeout = 0).
	ClientSocketTimeout time.Duration
	// Logger receives one line per refused or failed request; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Server is the HTTP face of one store. It is an http.Handler.
type Server struct {
	st       *store.Store
	opts     Options
	log      *slog.Logger
	projects map[uint32]string // uid -> project, for the owner field
	mux      *http.ServeMux
	inflight sync.WaitGroup // requests being served (Wait)
	keystone *Validator     // AuthKeystone's; nil in noauth mode
}

// New returns the API server of st. Errors: an unknown Auth mode, two
// projects mapped to one uid, a project mapped to uid 0 (root is the
// admin role, not a project).
// CheckKeystone authenticates the service user once in keystone mode
// (Validator.CheckService): an error when Keystone refuses it; nil in
// noauth mode, or when Keystone takes it or does not answer.
func (s *Server) CheckKeystone(ctx context.Context) error {
	if s.keystone == nil {
		return nil
	}
	return s.keystone.CheckService(ctx)
}

func New(st *store.Store, opts Options) (*Server, error) {
	var v *Validator
	switch opts.Auth {
	case AuthNoAuth:
	case AuthKeystone:
		if opts.Keystone == nil {
			return nil, errors.New("api auth keystone: no Keystone settings (the config file's [keystone] section)")
		}
		var err error
		if v, err = NewValidator(*opts.Keystone); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("api auth %q: want %q or %q", opts.Auth, AuthKeystone, AuthNoAuth)
	}
	if opts.ImageSizeCap <= 0 {
		opts.ImageSizeCap = DefaultImageSizeCap
	}
	if opts.ClientSocketTimeout == 0 {
		opts.ClientSocketTimeout = DefaultClientSocketTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{st: st, opts: opts, log: opts.Logger, projects: map[uint32]string{}, keystone: v}
	for p, uid := range opts.Projects {
		if uid == 0 {
			return nil, fmt.Errorf("api project %s: uid 0 is root (the admin role), not a project's", p)
		}
		if other, ok := s.projects[uid]; ok {
			return nil, fmt.Errorf("api projects %s and %s both map to uid %d", other, p, uid)
		}
		s.projects[uid] = p
	}
	s.routes()
	return s, nil
}

// Wait waits until every request being served has returned, at most d;
// it reports whether they all did. After http.Server.Shutdown or Close
// (which do not wait for handlers of cut connections), and before the
// store closes: an upload cut off by the stop aborts (its image queued
// again) while the store is still open.
func (s *Server) Wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// CheckListen refuses an address the auth mode may not listen on: noauth
// trusts every request's headers, so it listens on loopback only
// (127.0.0.0/8, ::1, localhost).
func CheckListen(addr, auth string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api address %q: %w (want HOST:PORT, e.g. 127.0.0.1:9292)", addr, err)
	}
	if auth == AuthNoAuth && host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("api address %q: --api-auth noauth trusts every caller's identity headers, so it listens on a loopback address only (127.0.0.1, ::1 or localhost)", addr)
		}
	}
	return nil
}

// NewHTTPServer returns an http.Server for h with the bounds of this API:
// headers (MaxHeaderBytes, 10 s to arrive), idle connections (2 min). A
// body has no total deadline (an upload of 1 TiB takes its time) but
// stops at the first read error; an image body also when no byte arrived
// for Options.ClientSocketTimeout (Server.idleBody).
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.versions(http.StatusMultipleChoices))
	m.HandleFunc("GET /versions", s.versions(http.StatusOK))
	m.HandleFunc("GET /v2/{$}", s.versions(http.StatusOK))
	m.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		fmt.Fprint(w, "OK")
	})
	m.HandleFunc("GET /v2/schemas/image", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, imageSchema()) })
	m.HandleFunc("GET /v2/schemas/images", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, imagesSchema()) })
	m.HandleFunc("GET /v2/info/import", s.infoImport)
	m.HandleFunc("GET /v2/info/stores", s.infoStores)
	m.HandleFunc("GET /v2/images", s.list)
	m.HandleFunc("POST /v2/images", s.create)
	m.HandleFunc("GET /v2/images/{id}", s.show)
	m.HandleFunc("PATCH /v2/images/{id}", s.update)
	m.HandleFunc("DELETE /v2/images/{id}", s.delete)
	m.HandleFunc("PUT /v2/images/{id}/file", s.upload)
	m.HandleFunc("GET /v2/images/{id}/file", s.download)
	m.HandleFunc("PUT /v2/images/{id}/stage", s.stage)         // import.go
	m.HandleFunc("POST /v2/images/{id}/import", s.importImage) // import.go
	m.HandleFunc("GET /v2/images/{id}/tasks", s.imageTasks)    // import.go
	m.HandleFunc("POST /v2/images/{id}/actions/deactivate", s.deactivate)
	m.HandleFunc("POST /v2/images/{id}/actions/reactivate", s.reactivate)
	s.memberRoutes(m)  // members.go
	s.metadefRoutes(m) // metadefs.go
	m.HandleFunc("PUT /v2/images/{id}/tags/{tag}", s.addTag)
	m.HandleFunc("DELETE /v2/images/{id}/tags/{tag}", s.deleteTag)
	s.mux = m
}

// ServeHTTP serves one request: Glance's 404 for an unknown path, 405
// (with Allow) for a known path with another method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	r = withRequestID(w, r) // import.go: X-Openstack-Request-Id
	if s.keystone != nil && !unauthenticated(r) {
		var ok bool
		if r, ok = s.authenticate(w, r); !ok {
			return
		}
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		rec := &statusOnly{ResponseWriter: w, r: r}
		s.mux.ServeHTTP(rec, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// statusOnly replaces the mux's own text bodies of 404 and 405 with
// Glance's error bodies.
type statusOnly struct {
	http.ResponseWriter
	r       *http.Request
	skipped bool
}

func (w *statusOnly) WriteHeader(code int) {
	if code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
		w.skipped = true
		msg := "The resource could not be found."
		if code == http.StatusMethodNotAllowed {
			msg = "The method specified is not allowed for this resource."
		}
		w.ResponseWriter.Header().Del("X-Content-Type-Options")
		writeError(w.ResponseWriter, w.r, code, msg)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusOnly) Write(p []byte) (int, error) {
	if w.skipped {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// caller is the store caller of r in noauth mode, as Glance's noauth
// context: with no identity header at all, the admin (root), as Glance's
// unauthenticated context is; X-Roles naming admin: root; otherwise the
// uid of the project in X-Tenant-Id (or X-Project-Id), or, unmapped or
// absent, store.Anyone (public images only).
//
// In keystone mode it is the token's identity (authenticate): the admin
// role is root, else the uid its project maps to, else store.Anyone.
func (s *Server) caller(r *http.Request) (store.Caller, string) {
	if s.keystone != nil {
		id, _ := r.Context().Value(identityKey{}).(*Identity)
		if id == nil {
			return store.Anyone, ""
		}
		if id.IsAdmin() {
			return store.Root, id.ProjectID
		}
		if uid, ok := s.opts.Projects[id.ProjectID]; ok && id.ProjectID != "" {
			return store.Caller{UID: uid, GID: uid}, id.ProjectID
		}
		return store.Anyone, id.ProjectID
	}
	project := r.Header.Get("X-Project-Id")
	if project == "" {
		project = r.Header.Get("X-Tenant-Id")
	}
	roles := r.Header.Get("X-Roles")
	for _, role := range strings.Split(roles, ",") {
		if strings.TrimSpace(strings.ToLower(role)) == "admin" {
			return store.Root, project
		}
	}
	if project == "" && roles == "" {
		return store.Root, ""
	}
	if uid, ok := s.opts.Projects[project]; ok {
		return store.Caller{UID: uid, GID: uid, Project: project}, project
	}
	return store.Anyone, project
}

// owner is the owner field of im: its uid's project, else the uid in
// decimal (root's images: "0").
func (s *Server) owner(uid uint32) string {
	if p, ok := s.projects[uid]; ok {
		return p
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// ownerUID is the uid an owner filter names, and whether it names one.
func (s *Server) ownerUID(owner string) (uint32, bool) {
	if uid, ok := s.opts.Projects[owner]; ok {
		return uid, true
	}
	n, err := strconv.ParseUint(owner, 10, 32)
	return uint32(n), err == nil
}

// storeStatus maps a store error to Glance's status code for the same
// mistake.
func storeStatus(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrBusy):
		return http.StatusConflict
	case errors.Is(err, store.ErrImmutable), errors.Is(err, store.ErrPermission), errors.Is(err, store.ErrNotPermitted):
		return http.StatusForbidden
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrTooBig), errors.Is(err, store.ErrRefused):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrQuota), errors.Is(err, store.ErrNoSpace):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fail answers r with the error of a store call, logged at warn (a 5xx at
// error) with the store's text; the answer's message is apiMessage's.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := storeStatus(err)
	msg := apiMessage(r, err)
	if code >= 500 {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
		msg = "The server could not complete the request: " + msg
	} else {
		s.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	writeError(w, r, code, msg)
}
