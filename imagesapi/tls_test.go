package imagesapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// testCA is a certificate authority made in the test (nothing is
// committed): it signs the servers' certificates the clients trust.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

var serial = big.NewInt(100)
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial = new(big.Int).Add(serial, big.NewInt(1))
	return serial
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "imagefs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// pool is a CertPool of the CA alone.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// certOpts vary a server certificate.
type certOpts struct {
	notBefore, notAfter time.Time
	extKeyUsage         []x509.ExtKeyUsage
	rsa                 bool
	sec1                bool // an EC key as SEC 1 ("EC PRIVATE KEY"), not PKCS#8
}

// issue makes a server certificate for 127.0.0.1 and localhost and its
// key, both PEM (the key PKCS#8, PKCS#1 with o.rsa, SEC 1 with o.sec1),
// and its serial.
func (ca *testCA) issue(t *testing.T, o certOpts) (certPEM, keyPEM []byte, sn *big.Int) {
	t.Helper()
	var key crypto.Signer
	var keyBlock *pem.Block
	if o.rsa {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		key, keyBlock = k, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		key, keyBlock = k, &pem.Block{Type: "PRIVATE KEY", Bytes: der}
		if o.sec1 {
			der, _ = x509.MarshalECPrivateKey(k)
			keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
		}
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	if o.extKeyUsage == nil {
		o.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	sn = nextSerial()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "imagefs api " + sn.String()},
		NotBefore: o.notBefore, NotAfter: o.notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: o.extKeyUsage,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	// The chain: the server's certificate, then the CA's.
	certPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...)
	return certPEM, pem.EncodeToMemory(keyBlock), sn
}

// writeFile writes b at path by a rename (a new inode, as certbot and
// most deploy tools replace a certificate), with mode.
func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsEnv is a store served over TLS on loopback with the certificate
// files cert and key.
type tlsEnv struct {
	*env
	addr, cert, key string
	cf              *CertFiles
	logs            *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTLSEnv(t *testing.T, certPEM, keyPEM []byte) *tlsEnv {
	t.Helper()
	dir := t.TempDir()
	e := &tlsEnv{cert: filepath.Join(dir, "api.crt"), key: filepath.Join(dir, "api.key"), logs: &syncBuffer{}}
	writeFile(t, e.cert, certPEM, 0o644)
	writeFile(t, e.key, keyPEM, 0o600)
	cf, err := LoadCertFiles(e.cert, e.key, slog.New(slog.NewTextHandler(e.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.cf = cf
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000, "bob": 2000}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewTLSServer(h, cf)
	srv.ErrorLog = nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		st.Close()
	})
	e.addr = ln.Addr().String()
	e.env = &env{t: t, st: st, dir: dir, url: "https://" + e.addr}
	return e
}

// serverSerial is the serial of the certificate a new connection gets.
func (e *tlsEnv) serverSerial(ca *testCA) *big.Int {
	e.t.Helper()
	c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestTLSServe: the API over TLS with a certificate (chain) and key made
// here: a client that trusts the CA gets the API over HTTP/1.1 (TLS 1.2
// or later), with https links in the versions document; TLS 1.1 is
// refused; plain HTTP to the port gets a clean 400 and a closed
// connection; a client that does not trust the CA fails its handshake.
func TestTLSServe(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM, _ := ca.issue(t, certOpts{})
	e := newTLSEnv(t, certPEM, keyPEM)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	do := func(method, path, ctype string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}

	resp, err := client.Get(e.url + "/versions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET /versions over TLS: %d %s %+v", resp.StatusCode, resp.Proto, resp.TLS)
	}
	var vs struct {
		Versions []struct {
			Links []struct{ Href string }
		}
	}
	if err := json.Unmarshal(body, &vs); err != nil || len(vs.Versions) == 0 {
		t.Fatalf("versions: %v %s", err, body)
	}
	for _, v := range vs.Versions {
		for _, l := range v.Links {
			if !strings.HasPrefix(l.Href, "https://"+e.addr+"/") {
				t.Fatalf("versions link %q: want https://%s/...", l.Href, e.addr)
			}
		}
	}

	// The API itself: create, upload, list, download over TLS.
	code, b := do("POST", "/v2/images", "application/json", []byte(`{"name": "tls", "disk_format": "raw", "container_format": "bare"}`))
	if code != 201 {
		t.Fatalf("create over TLS: %d %s", code, b)
	}
	var im map[string]any
	json.Unmarshal(b, &im)
	data := bytes.Repeat([]byte("imagefs!"), 64<<10)
	if code, b := do("PUT", "/v2/images/"+im["id"].(string)+"/file", "application/octet-stream", data); code != 204 {
		t.Fatalf("upload over TLS: %d %s", code, b)
	}
	if code, b := do("GET", "/v2/images/"+im["id"].(string)+"/file", "", nil); code != 200 || !bytes.Equal(b, data) {
		t.Fatalf("download over TLS: %d, %d bytes", code, len(b))
	}

	// TLS 1.1: refused.
	if c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	// A client that does not trust the CA: its handshake fails.
	if _, err := http.Get(e.url + "/versions"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v", err)
	}

	// Plain HTTP to the TLS port: 400 in plain words, the connection
	// closed, no hang.
	conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "GET /v2/images HTTP/1.1\r\nHost: "+e.addr+"\r\n\r\n")
	plain, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(plain.Body)
	if plain.StatusCode != 400 || !strings.Contains(string(msg), "HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP to the TLS port: %d %s", plain.StatusCode, msg)
	}
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("plain HTTP: the connection stays open (%d, %v)", n, err)
	}
	// And the server still serves TLS.
	if _, err := client.Get(e.url + "/healthcheck"); err != nil {
		t.Fatal(err)
	}
}

// TestTLSCertFilesRefused: every bad pair is refused by LoadCertFiles
// with an error naming the file and the problem, never a line of the
// key.
func TestTLSCertFilesRefused(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM, _ := ca.issue(t, certOpts{})
	_, otherKey, _ := ca.issue(t, certOpts{})
	expired, expiredKey, _ := ca.issue(t, certOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	future, futureKey, _ := ca.issue(t, certOpts{notBefore: time.Now().Add(time.Hour)})
	client, clientKey, _ := ca.issue(t, certOpts{extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	// The CA first, then the server's: the key is not the first one's.
	caFirst := append(append([]byte{}, ca.pem...), certPEM[:bytes.Index(certPEM, ca.pem)]...)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("not really, never parsed")})
	legacyEnc := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte("xx")})
	junkKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key at all")})
	junkCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not a certificate")})

	dir := t.TempDir()
	cert, key := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	for _, tc := range []struct {
		name        string
		cert, key   []byte
		keyMode     os.FileMode
		noCert      bool
		noKey       bool
		want, names string
	}{
		{name: "no cert file", noCert: true, key: keyPEM, want: "no such file", names: cert},
		{name: "no key file", cert: certPEM, noKey: true, want: "no such file", names: key},
		{name: "the key as the cert", cert: keyPEM, key: keyPEM, want: "no PEM certificate", names: cert},
		{name: "junk certificate", cert: junkCert, key: keyPEM, want: "not a valid X.509 certificate", names: cert},
		{name: "the cert as the key", cert: certPEM, key: certPEM, want: "no PEM private key", names: key},
		{name: "junk key", cert: certPEM, key: junkKey, want: "not a PKCS#8, PKCS#1 or SEC 1 private key", names: key},
		{name: "wrong key", cert: certPEM, key: otherKey, want: "is not the key of the certificate", names: cert},
		{name: "chain in the wrong order", cert: caFirst, key: keyPEM, want: "comes first", names: key},
		{name: "expired", cert: expired, key: expiredKey, want: "expired on", names: cert},
		{name: "not yet valid", cert: future, key: futureKey, want: "not valid before", names: cert},
		{name: "a client certificate", cert: client, key: clientKey, want: "not for a server", names: cert},
		{name: "encrypted key", cert: certPEM, key: encrypted, want: "encrypted", names: key},
		{name: "legacy encrypted key", cert: certPEM, key: legacyEnc, want: "encrypted", names: key},
		{name: "key readable by others", cert: certPEM, key: keyPEM, keyMode: 0o644, want: "chmod 600", names: key},
		{name: "key writable by its group", cert: certPEM, key: keyPEM, keyMode: 0o660, want: "chmod 600", names: key},
	} {
		os.Remove(cert)
		os.Remove(key)
		if !tc.noCert {
			writeFile(t, cert, tc.cert, 0o644)
		}
		if !tc.noKey {
			mode := tc.keyMode
			if mode == 0 {
				mode = 0o600
			}
			writeFile(t, key, tc.key, mode)
		}
		cf, err := LoadCertFiles(cert, key, nil)
		if err == nil {
			t.Errorf("%s: loaded (%v)", tc.name, cf.Leaf().Subject)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, tc.names) {
			t.Errorf("%s: %q, want %q naming %s", tc.name, msg, tc.want, tc.names)
		}
		for _, k := range [][]byte{keyPEM, otherKey, tc.key} {
			if leaksPEM(msg, k) {
				t.Errorf("%s: the error quotes the key: %q", tc.name, msg)
			}
		}
	}

	// A good pair loads: ECDSA PKCS#8; RSA PKCS#1; ECDSA SEC 1 (as the
	// README says); one file holding the chain and the key; a key of
	// root's readable by its group (0640).
	for _, o := range []certOpts{{}, {rsa: true}, {sec1: true}} {
		c, k, sn := ca.issue(t, o)
		writeFile(t, cert, c, 0o644)
		writeFile(t, key, k, 0o600)
		cf, err := LoadCertFiles(cert, key, nil)
		if err != nil || cf.Leaf().SerialNumber.Cmp(sn) != 0 {
			t.Fatalf("a good pair (rsa %v, sec1 %v): %v", o.rsa, o.sec1, err)
		}
		both := filepath.Join(dir, "both.pem")
		writeFile(t, both, append(append([]byte{}, c...), k...), 0o600)
		if _, err := LoadCertFiles(both, both, nil); err != nil {
			t.Fatalf("one file with the chain and the key: %v", err)
		}
	}
	if os.Geteuid() == 0 {
		writeFile(t, key, keyPEM, 0o640)
		writeFile(t, cert, certPEM, 0o644)
		if _, err := LoadCertFiles(cert, key, nil); err != nil {
			t.Fatalf("root's key of mode 0640: %v", err)
		}
	}
}

// leaksPEM reports whether msg holds a line of the base64 body of the
// PEM p (16 characters of any of its lines).
func leaksPEM(msg string, p []byte) bool {
	for _, line := range strings.Split(string(p), "\n") {
		if strings.HasPrefix(line, "-----") || len(line) < 16 {
			continue
		}
		for i := 0; i+16 <= len(line); i += 8 {
			if strings.Contains(msg, line[i:i+16]) {
				return true
			}
		}
	}
	return false
}

// TestTLSReload: a renewed certificate is served from the next
// connection once its files change (no remount); a changed pair that
// does not load (the certificate replaced before its key) is logged once,
// without the key, and the previous certificate stays until the key
// arrives.
func TestTLSReload(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM, sn1 := ca.issue(t, certOpts{})
	e := newTLSEnv(t, certPEM, keyPEM)
	clock := time.Now()
	var clockMu sync.Mutex
	tick := func() {
		clockMu.Lock()
		clock = clock.Add(CertCheckInterval)
		clockMu.Unlock()
	}
	e.cf.mu.Lock()
	e.cf.now = func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return clock
	}
	e.cf.mu.Unlock()

	if got := e.serverSerial(ca); got.Cmp(sn1) != 0 {
		t.Fatalf("serial %v, want %v", got, sn1)
	}

	// Renewed (both files replaced): served once the check interval
	// passed, not before.
	cert2, key2, sn2 := ca.issue(t, certOpts{rsa: true})
	writeFile(t, e.key, key2, 0o600)
	writeFile(t, e.cert, cert2, 0o644)
	if got := e.serverSerial(ca); got.Cmp(sn1) != 0 {
		t.Fatalf("within the check interval: serial %v, want still %v", got, sn1)
	}
	tick()
	if got := e.serverSerial(ca); got.Cmp(sn2) != 0 {
		t.Fatalf("after a renewal: serial %v, want %v", got, sn2)
	}
	if !strings.Contains(e.logs.String(), "certificate reloaded") {
		t.Fatalf("no reload logged: %s", e.logs)
	}

	// The certificate replaced, its key not yet: the previous one stays,
	// one error logged, without the key.
	cert3, key3, sn3 := ca.issue(t, certOpts{})
	writeFile(t, e.cert, cert3, 0o644)
	for range 3 {
		tick()
		if got := e.serverSerial(ca); got.Cmp(sn2) != 0 {
			t.Fatalf("with a certificate whose key is not there: serial %v, want still %v", got, sn2)
		}
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "is not the key of the certificate"); n != 1 {
		t.Fatalf("want one error logged for the mismatched pair, got %d: %s", n, logs)
	}
	if leaksPEM(logs, key2) || leaksPEM(logs, key3) {
		t.Fatalf("the log quotes a key: %s", logs)
	}
	// The key arrives (rewritten in place this time): served.
	if err := os.WriteFile(e.key, key3, 0o600); err != nil {
		t.Fatal(err)
	}
	tick()
	if got := e.serverSerial(ca); got.Cmp(sn3) != 0 {
		t.Fatalf("once the key arrived: serial %v, want %v", got, sn3)
	}

	// The files removed: the last certificate stays.
	os.Remove(e.cert)
	tick()
	if got := e.serverSerial(ca); got.Cmp(sn3) != 0 {
		t.Fatalf("with the files gone: serial %v, want %v", got, sn3)
	}
}

// TestKeystoneHTTPS: an https Keystone (the real one behind a TLS proxy
// made here) is reached with the CA of the [keystone] cafile; without it
// (the system's CAs) the service check fails saying the certificate is
// not trusted, and a cafile without a certificate is refused.
func TestKeystoneHTTPS(t *testing.T) {
	k := testutil.KeystoneServer(t)
	target, err := url.Parse(k.AuthURL)
	if err != nil {
		t.Fatal(err)
	}
	target.Path = ""
	proxy := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()
	caFile := filepath.Join(t.TempDir(), "keystone-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw}), 0o644)

	cfg := serviceConfig(t, k)
	cfg.AuthURL = proxy.URL + "/v3"
	cfg.Timeout = 30 * time.Second
	cfg.CAFile = caFile
	v, err := NewValidator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := v.CheckService(ctx); err != nil {
		t.Fatalf("service check over https with the cafile: %v", err)
	}
	id, err := v.Validate(ctx, keystoneToken(t, k, "tu1"))
	if err != nil || id.ProjectID != k.Projects["tp1"] {
		t.Fatalf("a token validated over https: %+v %v", id, err)
	}

	cfg.CAFile = ""
	v, err = NewValidator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CheckService(ctx); err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "cafile") ||
		strings.Contains(err.Error(), cfg.Password) {
		t.Fatalf("service check over https without the CA: %v", err)
	}

	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o644)
	cfg.CAFile = junk
	if _, err := NewValidator(cfg); err == nil || !strings.Contains(err.Error(), "no PEM certificate") || !strings.Contains(err.Error(), junk) {
		t.Fatalf("a cafile without a certificate: %v", err)
	}
	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := NewValidator(cfg); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a missing cafile: %v", err)
	}
}
