package imagesapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// These tests run against the real Keystone of scripts/keystone.sh
// (testutil.KeystoneServer starts it when it does not run).

// countingTransport counts the requests that reach Keystone (the real
// one: it only counts).
type countingTransport struct {
	checks, auths atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == "GET" {
		c.checks.Add(1)
	} else {
		c.auths.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// keystoneToken gets a project-scoped token of user from the real Keystone.
func keystoneToken(t *testing.T, k testutil.Keystone, user string) string {
	t.Helper()
	a := k.Account(t, user)
	body, _ := json.Marshal(map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": a.User, "password": a.Password, "domain": map[string]string{"name": "Default"}}}},
		"scope": map[string]any{"project": map[string]any{"name": a.Project, "domain": map[string]string{"name": "Default"}}},
	}})
	resp, err := http.Post(k.AuthURL+"/auth/tokens?nocatalog", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("token of %s: HTTP %d", user, resp.StatusCode)
	}
	return resp.Header.Get("X-Subject-Token")
}

func serviceConfig(t *testing.T, k testutil.Keystone) KeystoneConfig {
	a := k.Account(t, "imagefs")
	return KeystoneConfig{AuthURL: k.AuthURL, Username: a.User, Password: a.Password, Project: a.Project}
}

// TestKeystoneValidator: the validator's answers for real tokens (a
// member's, an admin's, garbage, a revoked one), its cache (one call to
// Keystone per token, however many ask at once; the size bounded), and a
// wrong service password.
func TestKeystoneValidator(t *testing.T) {
	k := testutil.KeystoneServer(t)
	ct := &countingTransport{}
	cfg := serviceConfig(t, k)
	cfg.Client = &http.Client{Transport: ct, Timeout: 10 * time.Second}
	cfg.Timeout = 10 * time.Second // a loaded test machine
	v, err := NewValidator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	tu1 := keystoneToken(t, k, "tu1")
	id, err := v.Validate(ctx, tu1)
	if err != nil {
		t.Fatal(err)
	}
	if id.ProjectID != k.Projects["tp1"] || id.ProjectName != "tp1" || id.UserName != "tu1" || id.UserID == "" ||
		id.IsAdmin() || !strings.Contains(strings.Join(id.Roles, ","), "member") || time.Until(id.ExpiresAt) < 30*time.Minute {
		t.Fatalf("tu1's identity: %+v (projects %v)", id, k.Projects)
	}
	adm, err := v.Validate(ctx, keystoneToken(t, k, "tuadm"))
	if err != nil || !adm.IsAdmin() || adm.ProjectID != k.Projects["tpadm"] {
		t.Fatalf("tuadm: %+v %v", adm, err)
	}

	// Garbage and an empty token: invalid.
	for _, bad := range []string{"gAAAAABnot-a-token", "", strings.Repeat("x", 300)} {
		if _, err := v.Validate(ctx, bad); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("token %.20q: %v, want ErrTokenInvalid", bad, err)
		}
	}

	// Cached, valid and invalid: no more calls to Keystone.
	checks := ct.checks.Load()
	for range 5 {
		if _, err := v.Validate(ctx, tu1); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(ctx, "gAAAAABnot-a-token"); !errors.Is(err, ErrTokenInvalid) {
			t.Fatal(err)
		}
	}
	if n := ct.checks.Load() - checks; n != 0 {
		t.Fatalf("%d calls to Keystone for cached tokens", n)
	}
	if n := ct.auths.Load(); n != 1 {
		t.Fatalf("the service authenticated %d times, want once", n)
	}

	// Many callers of one new token at once: one call to Keystone.
	tu2 := keystoneToken(t, k, "tu2")
	checks = ct.checks.Load()
	var wg sync.WaitGroup
	var fails atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id, err := v.Validate(ctx, tu2); err != nil || id.ProjectID != k.Projects["tp2"] {
				fails.Add(1)
			}
		}()
	}
	wg.Wait()
	if fails.Load() != 0 || ct.checks.Load()-checks != 1 {
		t.Fatalf("50 concurrent validations of one token: %d failed, %d calls to Keystone", fails.Load(), ct.checks.Load()-checks)
	}

	// A revoked token: refused by a validator that has not seen it.
	tu3 := keystoneToken(t, k, "tu3")
	req, _ := http.NewRequest("DELETE", k.AuthURL+"/auth/tokens", nil)
	req.Header.Set("X-Auth-Token", tu3)
	req.Header.Set("X-Subject-Token", tu3)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("revoking tu3's token: %v %v", resp, err)
	}
	if _, err := v.Validate(ctx, tu3); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("a revoked token: %v", err)
	}

	// The cache is bounded.
	small := cfg
	small.CacheSize = 5
	vs, _ := NewValidator(small)
	for i := range 20 {
		vs.Validate(ctx, fmt.Sprintf("bad-%d", i))
	}
	vs.Validate(ctx, tu1)
	if n := len(vs.cache); n > 5 {
		t.Fatalf("cache of size 5 holds %d tokens", n)
	}
	if _, err := vs.Validate(ctx, tu1); err != nil {
		t.Fatal("the newest token was dropped from a full cache")
	}

	// A wrong service password: Keystone unavailable to the caller (503),
	// the password in no error, nothing cached.
	wrong := serviceConfig(t, k)
	wrong.Password = "not-the-password-xyzzy"
	vw, _ := NewValidator(wrong)
	_, err = vw.Validate(ctx, tu1)
	if !errors.Is(err, ErrKeystoneUnavailable) || strings.Contains(err.Error(), "xyzzy") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong service password: %v", err)
	}
	if len(vw.cache) != 0 {
		t.Fatal("a token was cached while Keystone could not check it")
	}
	// As a mount starts: the refused service user is an error (the mount
	// fails, rather than answering 503 to every request), the right one
	// is not.
	if err := vw.CheckService(ctx); err == nil || strings.Contains(err.Error(), "xyzzy") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("CheckService with a wrong service password: %v", err)
	}
	if err := vs.CheckService(ctx); err != nil {
		t.Fatalf("CheckService with the right service user: %v", err)
	}
}

// TestKeystoneUnreachable: a Keystone that accepts connections and never
// answers, and one that is not there: 503 within the timeout, never a hang.
func TestKeystoneUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String() + "/v3"
	closed.Close()

	for _, url := range []string{"http://" + ln.Addr().String() + "/v3", closedURL} {
		e := newKeystoneEnv(t, KeystoneConfig{AuthURL: url, Username: "u", Password: "p", Project: "p", Timeout: 500 * time.Millisecond})
		start := time.Now()
		code, _, body := e.do("", "GET", "/v2/images", "", nil, "X-Auth-Token", "some-token")
		if d := time.Since(start); code != 503 || d > 3*time.Second {
			t.Fatalf("Keystone %s: %d after %v: %s", url, code, d, body)
		}
	}
}

// newKeystoneEnv is newEnv in keystone mode: projects tp1 (uid 1001) and
// tp2 (uid 1002) of the test Keystone mapped when it is k.
func newKeystoneEnv(t *testing.T, cfg KeystoneConfig, projects ...string) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]uint32{}
	for i, p := range projects {
		m[p] = uint32(1001 + i)
	}
	h, err := New(st, Options{Auth: AuthKeystone, Keystone: &cfg, Projects: m})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config = NewHTTPServer(h)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &env{t: t, st: st, dir: dir, url: srv.URL}
}

// TestKeystoneAPI: the API in keystone mode against the real Keystone:
// 401 without a token or with a bad one (Glance's body), the versions
// without one; a member's image owned by its project's uid; another
// project does not see it; the admin role is root; identity headers are
// ignored.
func TestKeystoneAPI(t *testing.T) {
	k := testutil.KeystoneServer(t)
	cfg := serviceConfig(t, k)
	cfg.Timeout = 10 * time.Second
	e := newKeystoneEnv(t, cfg, k.Projects["tp1"], k.Projects["tp2"])

	code, hdr, body := e.do("", "GET", "/v2/images", "", nil)
	var errBody struct {
		Error struct {
			Code    int
			Title   string
			Message string
		}
	}
	json.Unmarshal(body, &errBody)
	if code != 401 || errBody.Error.Code != 401 || errBody.Error.Message != "The request you have made requires authentication." ||
		!strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Keystone uri=") {
		t.Fatalf("no token: %d %v %s", code, hdr, body)
	}
	// noauth's headers mean nothing here.
	if code, _, _ := e.do("admin", "GET", "/v2/images", "", nil); code != 401 {
		t.Fatalf("X-Roles admin without a token: %d", code)
	}
	if code, _, _ := e.do("", "GET", "/v2/images", "", nil, "X-Auth-Token", "not-a-token"); code != 401 {
		t.Fatalf("a bad token: %d", code)
	}
	for _, p := range []string{"/", "/versions", "/healthcheck"} {
		if code, _, _ := e.do("", "GET", p, "", nil); code >= 400 {
			t.Fatalf("GET %s without a token: %d", p, code)
		}
	}

	tok := map[string]string{}
	for _, u := range []string{"tu1", "tu2", "tu3", "tuadm"} {
		tok[u] = keystoneToken(t, k, u)
	}
	as := func(user, method, path string, v any, want int) map[string]any {
		t.Helper()
		var b []byte
		if v != nil {
			b, _ = json.Marshal(v)
		}
		ctype := "application/json"
		if method == "PATCH" {
			ctype = patchV21
		}
		code, _, body := e.do("", method, path, ctype, b, "X-Auth-Token", tok[user])
		if code != want {
			t.Fatalf("%s %s %s: %d, want %d: %s", user, method, path, code, want, body)
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		return m
	}
	im := as("tu1", "POST", "/v2/images", map[string]any{"name": "tp1-img", "visibility": "private"}, 201)
	if im["owner"] != k.Projects["tp1"] {
		t.Fatalf("owner %v, want tp1's id %s", im["owner"], k.Projects["tp1"])
	}
	if got := e.st.Get(im["id"].(string)); got == nil || got.Owner != 1001 {
		t.Fatalf("the store's image: %+v", got)
	}
	id := im["id"].(string)
	as("tu2", "GET", "/v2/images/"+id, nil, 404)
	as("tu3", "POST", "/v2/images", map[string]any{"name": "unmapped"}, 403) // tp3 has no uid
	as("tuadm", "GET", "/v2/images/"+id, nil, 200)
	as("tuadm", "PATCH", "/v2/images/"+id, []map[string]any{{"op": "replace", "path": "/visibility", "value": "public"}}, 200)
	as("tu2", "GET", "/v2/images/"+id, nil, 200)
	as("tu2", "DELETE", "/v2/images/"+id, nil, 403)
	as("tu1", "DELETE", "/v2/images/"+id, nil, 204)
}
