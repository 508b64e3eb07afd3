package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imagefs/imagefs/imagesapi"
	"github.com/imagefs/imagefs/store"
	"github.com/spf13/pflag"
)

// apiConfig is the Images API's settings (--api-listen, --api-auth,
// --api-project, and their -o forms).
type apiConfig struct {
	listen   string            // HOST:PORT; "" serves no API
	auth     string            // noauth or keystone; "" means noauth
	projects map[string]uint32 // project id -> uid
	// keystone: the config file's [keystone] (resolveAPIConfig), with
	// auth keystone.
	keystone *imagesapi.KeystoneConfig
	// certFile, keyFile: the config file's [api] cert_file and key_file
	// (resolveAPIConfig); tls their certificate, loaded by listenAPI:
	// the API is served over https when it is set.
	certFile, keyFile string
	tls               *imagesapi.CertFiles
	// idle: the config file's [api] client_socket_timeout
	// (resolveAPIConfig), imagesapi.Options.ClientSocketTimeout.
	idle time.Duration
}

// apiOptionsHelp documents the API's -o options.
const apiOptionsHelp = `  api_listen=ADDR       serve the Images API v2 (Glance's) at http://ADDR, https:// with
                        [api] cert_file and key_file in the config file (= --api-listen)
  api_auth=MODE         the API's identity mode: keystone or noauth (= --api-auth)
  api_project=ID=UID    the API's project ID owns the uid's images (= --api-project)
`

// apiFlags adds the API's flags to fl.
func apiFlags(fl *pflag.FlagSet, c *mountConfig) {
	fl.StringVar(&c.api.listen, "api-listen", "", "serve the Images API v2 (as Glance) at http://`ADDR` (loopback with noauth, e.g. 127.0.0.1:9292), https:// with [api] cert_file and key_file in the config file; default: no API")
	fl.StringVar(&c.api.auth, "api-auth", imagesapi.AuthNoAuth, "the API's identity `MODE`: keystone (each X-Auth-Token validated against the Keystone of the config file's [keystone] section) or noauth (as Glance's: a request without identity headers is the admin; X-Tenant-Id and X-Roles are trusted; loopback only)")
	fl.Var(projectsValue{&c.api}, "api-project", "`ID=UID`: the API's project ID is uid UID, the owner of its images on the mount (repeatable); unmapped projects see public images only")
}

// projectsValue is the repeatable --api-project ID=UID flag.
type projectsValue struct{ c *apiConfig }

func (v projectsValue) String() string { return "" }
func (v projectsValue) Type() string   { return "ID=UID" }
func (v projectsValue) Set(s string) error {
	return v.c.addProject(s)
}

func (c *apiConfig) addProject(s string) error {
	id, uidStr, ok := strings.Cut(s, "=")
	uid, err := strconv.ParseUint(uidStr, 10, 32)
	if !ok || id == "" || err != nil {
		return fmt.Errorf("api project %q: want PROJECT_ID=UID (a decimal uid)", s)
	}
	if c.projects == nil {
		c.projects = map[string]uint32{}
	}
	c.projects[id] = uint32(uid)
	return nil
}

// applyAPIOption applies an api_* -o option; ok is false for any other.
func (c *mountConfig) applyAPIOption(key, val string, hasVal bool) (ok bool, err error) {
	switch key {
	case "api_listen", "api_auth", "api_project":
	default:
		return false, nil
	}
	if !hasVal || val == "" {
		return true, fmt.Errorf("mount option %s needs a value (%s=...)", key, key)
	}
	switch key {
	case "api_listen":
		c.api.listen = val
	case "api_auth":
		c.api.auth = val
	default:
		return true, c.api.addProject(val)
	}
	return true, nil
}

// checkAPI validates the API's settings before anything is mounted.
func (c *mountConfig) checkAPI() error {
	if c.api.listen == "" {
		return nil
	}
	if c.api.auth == "" {
		c.api.auth = imagesapi.AuthNoAuth
	}
	if c.api.auth != imagesapi.AuthNoAuth && c.api.auth != imagesapi.AuthKeystone {
		return fmt.Errorf("api auth %q: want keystone or noauth", c.api.auth)
	}
	if c.api.auth == imagesapi.AuthKeystone && c.configFile == "" {
		return fmt.Errorf("--api-auth keystone needs the Keystone settings: --config FILE with a [keystone] section (see imagefs mount --help)")
	}
	return imagesapi.CheckListen(c.api.listen, c.api.auth)
}

// apiServer is the running Images API of a mount.
type apiServer struct {
	ln  net.Listener
	h   *imagesapi.Server
	srv *http.Server
}

// listenAPI listens on the API's address (before the mount, so a taken
// port fails the mount); nil when no API is asked for.
func listenAPI(c *mountConfig) (net.Listener, error) {
	if c.api.listen == "" {
		return nil, nil
	}
	if err := c.checkAPI(); err != nil {
		return nil, err
	}
	if err := c.resolveAPIConfig(); err != nil {
		return nil, err
	}
	if c.api.certFile != "" {
		cf, err := imagesapi.LoadCertFiles(c.api.certFile, c.api.keyFile, nil)
		if err != nil {
			return nil, fmt.Errorf("%w (config file %s)", err, c.configFile)
		}
		c.api.tls = cf
	}
	ln, err := net.Listen("tcp", c.api.listen)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return ln, nil
}

// startAPI serves the Images API of st on ln in the background.
func startAPI(ln net.Listener, st *store.Store, c *mountConfig, lg *slog.Logger) (*apiServer, error) {
	h, err := imagesapi.New(st, imagesapi.Options{Auth: c.api.auth, Keystone: c.api.keystone, Projects: c.api.projects, ClientSocketTimeout: c.api.idle, Logger: lg})
	if err != nil {
		return nil, err
	}
	// A service user Keystone refuses would make every request a 503:
	// refuse the mount instead, saying why.
	if err := h.CheckKeystone(context.Background()); err != nil {
		return nil, fmt.Errorf("api: %w (the [keystone] section of %s)", err, c.configFile)
	}
	s := &apiServer{ln: ln, h: h}
	scheme, serve := "http", func() error { return s.srv.Serve(ln) }
	if c.api.tls != nil {
		s.srv = imagesapi.NewTLSServer(h, c.api.tls)
		scheme, serve = "https", func() error { return s.srv.ServeTLS(ln, "", "") }
	} else {
		s.srv = imagesapi.NewHTTPServer(h)
	}
	go func() {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("images API stopped", "err", err)
		}
	}()
	attrs := []any{"addr", ln.Addr().String(), "url", scheme + "://" + ln.Addr().String() + "/v2/images", "auth", c.api.auth}
	if c.api.tls != nil {
		leaf := c.api.tls.Leaf()
		attrs = append(attrs, "cert_file", c.api.certFile, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	slog.Info("images API listening", attrs...)
	return s, nil
}

// stop closes the listener and waits up to 5 s for requests in flight,
// then cuts the connections left (an upload cut off is aborted: its image
// is queued again) and waits up to 10 s more for their handlers, so the
// store closes after them.
func (s *apiServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	if !s.h.Wait(10 * time.Second) {
		slog.Error("images API: requests still running 15 s after the stop; closing the store under them")
	}
	slog.Info("images API stopped")
}
