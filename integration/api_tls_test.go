package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tlsFiles is a CA and a server certificate it signed for 127.0.0.1,
// made in the test (no key is committed), written as PEM files.
type tlsFiles struct {
	ca, cert, key string // paths
	caPool        *x509.CertPool
	caCert        *x509.Certificate
	caKey         *ecdsa.PrivateKey
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imagefs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFiles{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "api.crt"), key: filepath.Join(dir, "api.key"),
		caPool: x509.NewCertPool(), caKey: key}
	f.caCert, _ = x509.ParseCertificate(der)
	f.caPool.AddCert(f.caCert)
	if err := os.WriteFile(f.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	f.issue(t, big.NewInt(2))
	return f
}

// issue writes a new server certificate with serial sn and a new key
// (each by a rename, as a renewal does: the key first).
func (f *tlsFiles) issue(t *testing.T, sn *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "imagefs api"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, key.Public(), f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	for path, b := range map[string][]byte{
		f.key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		f.cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		if err := os.WriteFile(path+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{f.key, f.cert} {
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
}

// addAPISections adds sections to m's config file (the shared catalog's
// when the mount has one, else a new one) and returns its path.
func addAPISections(t *testing.T, m *fsMount, sections string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "imagefs.conf")
	if i := slices.Index(m.catalogArgs, "--config"); i >= 0 {
		conf = m.catalogArgs[i+1]
		old, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		sections = string(old) + sections
	} else {
		m.Args = append(m.Args, "--config", conf)
	}
	if err := os.WriteFile(conf, []byte(sections), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAPITLSOpenstackCLI: a mount serving the API over https (noauth on
// loopback, [api] cert_file and key_file): the real openstack CLI with
// --os-cacert creates, lists and saves an image that the mount shows;
// without the CA the CLI refuses the server; plain HTTP to the port gets a
// 400; a renewed certificate is served without a remount.
func TestAPITLSOpenstackCLI(t *testing.T) {
	requireTools(t, "openstack", "qemu-img")
	f := newTLSFiles(t)
	addr := freeLoopbackAddr(t)
	m := mount(t)
	addAPISections(t, m, "[api]\ncert_file = "+f.cert+"\nkey_file = "+f.key+"\n")
	m.Args = append(m.Args, "--api-listen", addr, "--api-project", "demo=1000")
	m.remount()
	a := &apiMount{fsMount: m, url: "https://" + addr}
	vhd := makeVHD(t, 4*mib, "fixed")

	id := strings.TrimSpace(a.oscOK("--os-cacert", f.ca, "image", "create", "--file", vhd.Path, "--disk-format", "vhd",
		"--container-format", "bare", "--property", "os_distro=superos", "-f", "value", "-c", "id", "over-tls"))
	if got := a.prop("over-tls", "id"); got != id {
		t.Fatalf("images/over-tls has id %s, the CLI created %s", got, id)
	}
	if a.prop("over-tls", "status") != "active" || a.prop("over-tls", "checksum") != vhd.MD5 {
		t.Fatalf("over-tls: status %s checksum %s, want active %s", a.prop("over-tls", "status"), a.prop("over-tls", "checksum"), vhd.MD5)
	}
	cmp(t, vhd.Path, a.dataFile("over-tls"))
	if got := strings.Fields(a.oscOK("--os-cacert", f.ca, "image", "list", "--property", "os_distro=superos", "-f", "value", "-c", "Name")); !slices.Equal(got, []string{"over-tls"}) {
		t.Fatalf("image list --property over https: %v", got)
	}
	saved := filepath.Join(t.TempDir(), "saved.vhd")
	a.oscOK("--os-cacert", f.ca, "image", "save", "--file", saved, "over-tls")
	cmp(t, vhd.Path, saved)

	// Without the CA: the CLI does not trust the server.
	if r := a.osc("--debug", "image", "list"); r.err == nil || !strings.Contains(r.stderr, "CERTIFICATE_VERIFY_FAILED") {
		t.Fatalf("openstack without --os-cacert: %s", r)
	}

	// Plain HTTP to the https port: a 400 saying so, nothing served.
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr + "/v2/images")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTP request to an HTTPS server") || strings.Contains(string(body), "over-tls") {
		t.Fatalf("plain HTTP to the https port: %d %s", resp.StatusCode, body)
	}

	// A renewed certificate: served by the running mount within a few
	// seconds (the files are looked at once a second at most, on a
	// handshake).
	serial := func() int64 {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.caPool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 2 {
		t.Fatalf("serial %d, want 2", s)
	}
	f.issue(t, big.NewInt(3))
	deadline := time.Now().Add(20 * time.Second)
	for serial() != 3 {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served 20 s after its files changed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.Fields(a.oscOK("--os-cacert", f.ca, "image", "list", "-f", "value", "-c", "Name")); !slices.Contains(got, "over-tls") {
		t.Fatalf("image list with the renewed certificate: %v", got)
	}
}

// TestAPITLSWrongKeyRefused: a key that is not the certificate's refuses
// the mount, naming the files, never quoting the key; nothing is mounted
// and no store is made.
func TestAPITLSWrongKeyRefused(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	f := newTLSFiles(t)
	other := newTLSFiles(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	conf := filepath.Join(dir, "imagefs.conf")
	if err := os.WriteFile(conf, []byte("[api]\ncert_file = "+f.cert+"\nkey_file = "+other.key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mount.out")
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "mount", "--config", conf, "--api-listen", freeLoopbackAddr(t), filepath.Join(dir, "store"), mnt)
	cmd.Stdout, cmd.Stderr = o, o
	runErr := cmd.Run()
	o.Close()
	msg, _ := os.ReadFile(out)
	if isMounted(mnt) {
		execCmd("fusermount3", "-u", mnt)
		t.Fatalf("mounted with a key that is not the certificate's: %v: %s", runErr, msg)
	}
	if runErr == nil || !strings.Contains(string(msg), other.key+" is not the key of the certificate in cert_file "+f.cert) {
		t.Fatalf("mount with a mismatched key: want a failure naming the files: %v: %s", runErr, msg)
	}
	key, _ := os.ReadFile(other.key)
	sc := bufio.NewScanner(strings.NewReader(string(key)))
	for sc.Scan() {
		if l := sc.Text(); len(l) > 16 && !strings.HasPrefix(l, "-----") && strings.Contains(string(msg), l[:16]) {
			t.Fatalf("the message quotes the key: %s", msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); !os.IsNotExist(err) {
		t.Fatalf("a store was made: %v", err)
	}
}
