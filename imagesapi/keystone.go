package imagesapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// AuthKeystone validates each request's X-Auth-Token against Keystone
// (KeystoneConfig) and takes the caller's project, user and roles from it.
const AuthKeystone = "keystone"

// KeystoneConfig is how the API reaches Keystone: its identity v3 URL and
// the service user whose token validates the callers' tokens (as
// keystonemiddleware's [keystone_authtoken]).
type KeystoneConfig struct {
	// AuthURL is Keystone's identity endpoint, http(s)://HOST:PORT/v3 (a
	// URL without /v3 gets it).
	AuthURL string
	// Username, Password, UserDomain: the service user (domain by name;
	// "" is Default). Password is never logged or put in an error.
	Username, Password, UserDomain string
	// Project, ProjectDomain: the project the service token is scoped to
	// (domain by name; "" is Default).
	Project, ProjectDomain string
	// Timeout bounds each call to Keystone (connect and answer); 0 means
	// DefaultKeystoneTimeout. A caller whose token cannot be checked in
	// this time gets 503.
	Timeout time.Duration
	// CacheSize bounds the tokens remembered (valid and invalid); 0 means
	// DefaultTokenCacheSize.
	CacheSize int
	// CAFile is a PEM file of the CA certificates that an https
	// AuthURL's certificate is checked against, in place of the
	// system's ("": the system's).
	CAFile string
	// Client is the HTTP client to Keystone; nil means one with Timeout
	// (and the CAs of CAFile, or the system's, for https; TLS 1.2 at
	// least).
	Client *http.Client
}

// Token cache and Keystone call bounds (keystonemiddleware's defaults
// where it has one).
const (
	DefaultKeystoneTimeout = 5 * time.Second
	DefaultTokenCacheSize  = 10000
	// TokenCacheTime bounds how long a valid token is trusted without
	// asking Keystone again (keystonemiddleware's token_cache_time): a
	// token revoked in Keystone keeps working here at most this long. A
	// token is never trusted past its expires_at.
	TokenCacheTime = 5 * time.Minute
	// InvalidTokenCacheTime: a token Keystone refused is refused again
	// without asking for this long.
	InvalidTokenCacheTime = 10 * time.Second
	// maxKeystoneCalls bounds the validations in flight at once; more
	// wait (within Timeout) for a turn.
	maxKeystoneCalls = 16
)

// Identity is what a validated token says of its bearer.
type Identity struct {
	UserID, UserName       string
	ProjectID, ProjectName string // "" for a token not scoped to a project
	Roles                  []string
	ExpiresAt              time.Time
}

// IsAdmin reports whether the token carries the admin role.
func (id *Identity) IsAdmin() bool {
	for _, r := range id.Roles {
		if strings.EqualFold(r, "admin") {
			return true
		}
	}
	return false
}

// Validation errors: ErrTokenInvalid is a token Keystone does not accept
// (401 to the caller); ErrKeystoneUnavailable is a Keystone that did not
// answer in time or answered with a server error, or refused the service
// user (503 to the caller).
var (
	ErrTokenInvalid        = errors.New("the token is not valid")
	ErrKeystoneUnavailable = errors.New("keystone is unavailable")
	// errServiceRefused: Keystone answered and refused the service user
	// (wrong name, password, project or domain): no later request can
	// succeed until the config file is fixed.
	errServiceRefused = errors.New("keystone refused the service user")
	// errUntrusted: Keystone's https certificate does not verify against
	// the CAs (the [keystone] cafile, or the system's): no request can
	// succeed until the config file or the certificate is fixed.
	errUntrusted = errors.New("keystone's certificate is not trusted")
)

// CheckService authenticates the service user once (as a mount starts):
// an error, naming the user and the HTTP status but never the password,
// when Keystone answers and refuses it, or naming the reason when an
// https Keystone's certificate does not verify (CAFile); nil when
// Keystone takes it or does not answer within the timeout (it may come
// up later; requests get 503 until it does).
func (v *Validator) CheckService(ctx context.Context) error {
	if _, err := v.serviceToken(ctx, true); errors.Is(err, errServiceRefused) || errors.Is(err, errUntrusted) {
		return err
	}
	return nil
}

// Validator checks Keystone tokens with a service token of its own
// (GET /v3/auth/tokens, X-Subject-Token), remembering valid ones until
// TokenCacheTime or their expiry and invalid ones InvalidTokenCacheTime,
// at most CacheSize of them. Safe for concurrent use.
type Validator struct {
	cfg    KeystoneConfig
	base   string // AuthURL with /v3, without a trailing slash
	client *http.Client
	now    func() time.Time
	sem    chan struct{}

	mu       sync.Mutex
	svcToken string
	svcUntil time.Time
	cache    map[[32]byte]cacheEntry
	inflight map[[32]byte]*call
}

type cacheEntry struct {
	id    *Identity // nil: invalid
	until time.Time
}

type call struct {
	done chan struct{}
	id   *Identity
	err  error
}

// NewValidator returns a Validator for cfg. Errors: no AuthURL, a URL
// that is not http(s), no service user or password or project, a CAFile
// that cannot be read or holds no PEM certificate.
func NewValidator(cfg KeystoneConfig) (*Validator, error) {
	u := strings.TrimRight(cfg.AuthURL, "/")
	switch {
	case !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://"):
		return nil, fmt.Errorf("keystone auth_url %q: want http(s)://HOST:PORT/v3", cfg.AuthURL)
	case cfg.Username == "" || cfg.Password == "":
		return nil, errors.New("keystone: the service user needs username and password")
	case cfg.Project == "":
		return nil, errors.New("keystone: the service user needs a project (project_name)")
	}
	if !strings.HasSuffix(u, "/v3") {
		u += "/v3"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultKeystoneTimeout
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultTokenCacheSize
	}
	if cfg.UserDomain == "" {
		cfg.UserDomain = "Default"
	}
	if cfg.ProjectDomain == "" {
		cfg.ProjectDomain = "Default"
	}
	client := cfg.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("keystone cafile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("keystone cafile %s: no PEM certificate in it (want -----BEGIN CERTIFICATE----- blocks)", cfg.CAFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		client = &http.Client{Timeout: cfg.Timeout, Transport: tr}
	}
	return &Validator{
		cfg: cfg, base: u, client: client, now: time.Now,
		sem:      make(chan struct{}, maxKeystoneCalls),
		cache:    map[[32]byte]cacheEntry{},
		inflight: map[[32]byte]*call{},
	}, nil
}

// Validate returns the identity of token. Errors: ErrTokenInvalid (no
// such token, expired, revoked), ErrKeystoneUnavailable (wrapped, with
// the reason; never the token or a password). It waits at most about
// three times the Timeout (a turn among the checks in flight, the service
// token, the check). Concurrent calls for one token share one Keystone
// call, which the first caller's going away does not cut short (the
// others stop waiting when their ctx ends).
func (v *Validator) Validate(ctx context.Context, token string) (*Identity, error) {
	if token == "" {
		return nil, ErrTokenInvalid
	}
	key := sha256.Sum256([]byte(token))
	now := v.now()
	v.mu.Lock()
	if e, ok := v.cache[key]; ok {
		if now.Before(e.until) {
			v.mu.Unlock()
			if e.id == nil {
				return nil, ErrTokenInvalid
			}
			return e.id, nil
		}
		delete(v.cache, key)
	}
	if c, ok := v.inflight[key]; ok {
		v.mu.Unlock()
		select {
		case <-c.done:
			return c.id, c.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrKeystoneUnavailable, ctx.Err())
		}
	}
	c := &call{done: make(chan struct{})}
	v.inflight[key] = c
	v.mu.Unlock()

	// The call is shared: a caller that goes away does not cut it short
	// for the others (each Keystone call has its own timeout).
	c.id, c.err = v.check(context.WithoutCancel(ctx), token)
	v.mu.Lock()
	delete(v.inflight, key)
	now = v.now()
	switch {
	case c.err == nil:
		until := now.Add(TokenCacheTime)
		if c.id.ExpiresAt.Before(until) {
			until = c.id.ExpiresAt
		}
		v.remember(key, cacheEntry{c.id, until}, now)
	case errors.Is(c.err, ErrTokenInvalid):
		v.remember(key, cacheEntry{nil, now.Add(InvalidTokenCacheTime)}, now)
	}
	v.mu.Unlock()
	close(c.done)
	return c.id, c.err
}

// remember caches e under key; a full cache first drops what expired,
// then the entries that expire soonest (a tenth of it). v.mu is held.
func (v *Validator) remember(key [32]byte, e cacheEntry, now time.Time) {
	if len(v.cache) >= v.cfg.CacheSize {
		for k, old := range v.cache {
			if !now.Before(old.until) {
				delete(v.cache, k)
			}
		}
		for len(v.cache) >= v.cfg.CacheSize {
			// Drop the entries of the soonest expiry first: the oldest
			// invalid ones and the valid ones nearest their end.
			cut := v.cfg.CacheSize / 10
			if cut < 1 {
				cut = 1
			}
			var soonest time.Time
			for _, old := range v.cache {
				if soonest.IsZero() || old.until.Before(soonest) {
					soonest = old.until
				}
			}
			for k, old := range v.cache {
				if !old.until.After(soonest) && cut > 0 {
					delete(v.cache, k)
					cut--
				}
			}
		}
	}
	v.cache[key] = e
}

// check asks Keystone about token, with the service token (fetched
// again once when Keystone says it is no longer valid).
func (v *Validator) check(ctx context.Context, token string) (*Identity, error) {
	// One turn among maxKeystoneCalls, within the timeout.
	wait, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	select {
	case v.sem <- struct{}{}:
		defer func() { <-v.sem }()
	case <-wait.Done():
		return nil, fmt.Errorf("%w: %d token checks already waiting for Keystone", ErrKeystoneUnavailable, maxKeystoneCalls)
	}
	for attempt := 0; ; attempt++ {
		svc, err := v.serviceToken(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		id, status, err := v.validate(ctx, svc, token)
		if status == http.StatusUnauthorized && attempt == 0 {
			continue // the service token expired or was revoked
		}
		return id, err
	}
}

// serviceToken is the service user's token, fetched when there is none,
// when it expires within a minute, or when renew.
func (v *Validator) serviceToken(ctx context.Context, renew bool) (string, error) {
	v.mu.Lock()
	tok, until := v.svcToken, v.svcUntil
	v.mu.Unlock()
	if !renew && tok != "" && v.now().Before(until) {
		return tok, nil
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{
			"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{
				"name": v.cfg.Username, "password": v.cfg.Password,
				"domain": map[string]string{"name": v.cfg.UserDomain},
			}},
		},
		"scope": map[string]any{"project": map[string]any{
			"name": v.cfg.Project, "domain": map[string]string{"name": v.cfg.ProjectDomain},
		}},
	}}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", v.base+"/auth/tokens?nocatalog", bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrKeystoneUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := v.client.Do(req)
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return "", fmt.Errorf("%w (%w): %s: %v (cafile in [keystone] names the CA that signed it)", ErrKeystoneUnavailable, errUntrusted, v.base, cve.Err)
	}
	if err != nil {
		return "", fmt.Errorf("%w: getting the service token from %s: %v", ErrKeystoneUnavailable, v.base, scrub(err))
	}
	defer resp.Body.Close()
	var out tokenBody
	derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
	tok = resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != http.StatusCreated || tok == "" || derr != nil {
		// 401: the service user's name, password or project is wrong;
		// the caller can do nothing about it either way.
		err := ErrKeystoneUnavailable
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			err = fmt.Errorf("%w (%w)", ErrKeystoneUnavailable, errServiceRefused)
		}
		return "", fmt.Errorf("%w: the service user %q (project %q) could not authenticate at %s: HTTP %d", err, v.cfg.Username, v.cfg.Project, v.base, resp.StatusCode)
	}
	until = out.Token.ExpiresAt.Add(-time.Minute)
	v.mu.Lock()
	v.svcToken, v.svcUntil = tok, until
	v.mu.Unlock()
	return tok, nil
}

// tokenBody is the part of Keystone's token document used here.
type tokenBody struct {
	Token struct {
		ExpiresAt time.Time `json:"expires_at"`
		User      struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"user"`
		Project *struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"project"`
		Roles []struct {
			Name string `json:"name"`
		} `json:"roles"`
	} `json:"token"`
}

// validate is one GET /v3/auth/tokens: the identity, or the status that
// refused it.
func (v *Validator) validate(ctx context.Context, svc, token string) (*Identity, int, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", v.base+"/auth/tokens?nocatalog", nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrKeystoneUnavailable, err)
	}
	req.Header.Set("X-Auth-Token", svc)
	req.Header.Set("X-Subject-Token", token)
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: validating a token at %s: %v", ErrKeystoneUnavailable, v.base, scrub(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusBadRequest:
		// 404: no such token (malformed, expired, revoked).
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil, resp.StatusCode, ErrTokenInvalid
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil, resp.StatusCode, fmt.Errorf("%w: validating a token at %s: HTTP %d", ErrKeystoneUnavailable, v.base, resp.StatusCode)
	}
	var out tokenBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%w: Keystone's token document: %v", ErrKeystoneUnavailable, err)
	}
	if !v.now().Before(out.Token.ExpiresAt) {
		return nil, resp.StatusCode, ErrTokenInvalid
	}
	id := &Identity{UserID: out.Token.User.ID, UserName: out.Token.User.Name, ExpiresAt: out.Token.ExpiresAt}
	if p := out.Token.Project; p != nil {
		id.ProjectID, id.ProjectName = p.ID, p.Name
	}
	for _, r := range out.Token.Roles {
		id.Roles = append(id.Roles, r.Name)
	}
	return id, resp.StatusCode, nil
}

// scrub drops the request's method and URL from a client error (the
// message names Keystone's URL itself).
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// identityKey is the request context's key of the caller's *Identity.
type identityKey struct{}

// unauthenticated reports whether r is one Glance answers without a token:
// the versions documents and the healthcheck.
func unauthenticated(r *http.Request) bool {
	switch r.URL.Path {
	case "/", "/versions", "/healthcheck":
		return r.Method == http.MethodGet || r.Method == http.MethodHead
	}
	return false
}

// authenticate validates r's X-Auth-Token and returns r with the caller's
// identity in its context. It answers and returns false as Glance behind
// keystonemiddleware does: 401 (with WWW-Authenticate naming Keystone)
// for no token or one Keystone refuses, 503 when Keystone cannot say.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	token := r.Header.Get("X-Auth-Token")
	if token == "" {
		token = r.Header.Get("X-Storage-Token")
	}
	id, err := s.keystone.Validate(r.Context(), token)
	switch {
	case err == nil:
		return r.WithContext(context.WithValue(r.Context(), identityKey{}, id)), true
	case errors.Is(err, ErrTokenInvalid):
		s.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "status", http.StatusUnauthorized, "err", "no token or an invalid one")
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Keystone uri=%q", strings.TrimSuffix(s.keystone.base, "/v3")))
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{
			"code": http.StatusUnauthorized, "title": "Unauthorized",
			"message": "The request you have made requires authentication.",
		}})
	default:
		s.log.Error("api request failed: the token could not be checked", "method", r.Method, "path", r.URL.Path, "status", http.StatusServiceUnavailable, "err", err)
		writeError(w, r, http.StatusServiceUnavailable, "The server is currently unavailable. Please try again at a later time.")
	}
	return r, false
}
