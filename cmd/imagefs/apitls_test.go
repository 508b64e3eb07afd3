package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned makes a self-signed server certificate for 127.0.0.1 and its
// PKCS#8 key, both PEM (made here: no key is committed).
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "imagefs api test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestAPITLSConfig: [api] cert_file and key_file (relative to the config
// file's directory) and [keystone] cafile are read; listenAPI loads the
// pair before anything is mounted and refuses a key that is not the
// certificate's, naming the files and never quoting the key; noauth
// stays on loopback with TLS.
func TestAPITLSConfig(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	_, otherKey := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "api.crt"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "api.key"), keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "other.key"), otherKey, 0o600)
	conf := filepath.Join(dir, "imagefs.conf")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const ks = "[keystone]\nauth_url = https://keystone.example:5000/v3\nusername = imagefs\npassword = s3cret-pw\nproject_name = service\ncafile = ca/keystone.pem\n"

	write(ks + "[api]\ncert_file = api.crt\nkey_file = " + filepath.Join(dir, "api.key") + "\n")
	c := defaultMountConfig()
	if err := c.applyOptions("api_listen=127.0.0.1:0,api_auth=keystone,config=" + conf); err != nil {
		t.Fatal(err)
	}
	if err := c.resolveAPIConfig(); err != nil {
		t.Fatal(err)
	}
	if c.api.certFile != filepath.Join(dir, "api.crt") || c.api.keyFile != filepath.Join(dir, "api.key") ||
		c.api.keystone.CAFile != filepath.Join(dir, "ca", "keystone.pem") {
		t.Fatalf("paths: cert %q key %q cafile %q", c.api.certFile, c.api.keyFile, c.api.keystone.CAFile)
	}

	// noauth (no [keystone] needed) with TLS: listens on loopback.
	write("[api]\ncert_file = api.crt\nkey_file = api.key\n")
	c = defaultMountConfig()
	c.applyOptions("api_listen=127.0.0.1:0,config=" + conf)
	ln, err := listenAPI(c)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if c.api.tls == nil || c.api.tls.Leaf().Subject.CommonName != "imagefs api test" {
		t.Fatalf("the certificate is not loaded: %+v", c.api.tls)
	}
	// ... and only there, TLS or not.
	c = defaultMountConfig()
	c.applyOptions("api_listen=0.0.0.0:0,config=" + conf)
	if _, err := listenAPI(c); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("noauth with TLS on 0.0.0.0: %v", err)
	}

	// A key that is not the certificate's: refused before listening,
	// naming both files and the config file, without the key.
	write("[api]\ncert_file = api.crt\nkey_file = other.key\n")
	c = defaultMountConfig()
	c.applyOptions("api_listen=127.0.0.1:0,config=" + conf)
	_, err = listenAPI(c)
	if err == nil || !strings.Contains(err.Error(), "other.key is not the key of the certificate in cert_file "+filepath.Join(dir, "api.crt")) ||
		!strings.Contains(err.Error(), conf) {
		t.Fatalf("a mismatched key: %v", err)
	}
	for _, line := range strings.Split(string(otherKey)+string(keyPEM), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line[:16]) {
			t.Fatalf("the error quotes the key: %v", err)
		}
	}

	for _, tc := range []struct{ text, want string }{
		{"[api]\ncert_file = api.crt\n", "needs both cert_file and key_file"},
		{"[api]\nkey_file = api.key\n", "needs both cert_file and key_file"},
		{"[api]\ncert_file = api.crt\ncert_file = api.crt\nkey_file = api.key\n", "cert_file given twice"},
		{"[api]\ncert_file = missing.crt\nkey_file = api.key\n", "missing.crt: no such file"},
		{"[api]\ncertfile = api.crt\n", `unknown key "certfile" in [api]`},
	} {
		write(tc.text)
		c := defaultMountConfig()
		c.applyOptions("api_listen=127.0.0.1:0,config=" + conf)
		if _, err := listenAPI(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.text, err, tc.want)
		}
	}
}
