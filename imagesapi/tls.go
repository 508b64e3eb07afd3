package imagesapi

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// TLS of the API: a server certificate (chain) and its private key in
// PEM files, served with crypto/tls (TLS 1.2 at least, HTTP/1.1 as
// Glance), reloaded when the files change.

// CertCheckInterval is how often, at most, a handshake looks at the
// certificate and key files for a change (their size, mtime and inode;
// a symlink is followed).
const CertCheckInterval = time.Second

// CertFiles serves the certificate of a PEM certificate file and a PEM
// key file (LoadCertFiles). A handshake that comes CertCheckInterval or
// more after the last look stats both files; when either changed, the
// pair is loaded again with the checks of LoadCertFiles and, if it
// passes, served from the next handshake on (connections open keep
// theirs). A pair that fails (a key not yet replaced, an expired
// certificate) is logged once and the previous certificate stays. Safe
// for concurrent use.
type CertFiles struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	cur atomic.Pointer[loadedCert]

	mu      sync.Mutex
	checked time.Time // the last look at the files
	failed  fileStamp // the files as they were at the last failed reload
}

type loadedCert struct {
	cert  *tls.Certificate
	stamp fileStamp
}

// fileStamp is what tells that the certificate or key file changed.
type fileStamp struct {
	cert, key fileID
}

type fileID struct {
	ino, size int64
	mtime     int64 // ns
}

func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = int64(st.Ino)
	}
	return id
}

// LoadCertFiles loads the server certificate of certFile and its private
// key of keyFile (both PEM; they may be one file). certFile holds the
// server's certificate first, then the intermediates of its chain;
// keyFile a PKCS#8, PKCS#1 (RSA) or SEC 1 (EC) key, not encrypted, owned
// by the caller (mode 0600 at most) or by root (0640 at most: the
// ssl-cert group may read it). Errors name the file and the problem (not
// found, no PEM certificate, not parsable, expired or not yet valid, not
// for servers, an encrypted or readable-by-others key, a key that is not
// the certificate's) and never quote the files' contents. lg receives
// the reloads (nil: slog.Default()).
func LoadCertFiles(certFile, keyFile string, lg *slog.Logger) (*CertFiles, error) {
	if lg == nil {
		lg = slog.Default()
	}
	c := &CertFiles{certFile: certFile, keyFile: keyFile, log: lg, now: time.Now}
	stamp := fileStamp{statID(certFile), statID(keyFile)}
	cert, err := loadPair(certFile, keyFile, c.now())
	if err != nil {
		return nil, err
	}
	c.cur.Store(&loadedCert{cert: cert, stamp: stamp})
	c.checked = c.now()
	return c, nil
}

// Leaf is the server certificate being served.
func (c *CertFiles) Leaf() *x509.Certificate { return c.cur.Load().cert.Leaf }

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first when its files changed (see CertFiles).
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.reload()
	return c.cur.Load().cert, nil
}

// reload loads the files again when CertCheckInterval passed since the
// last look and they changed since the pair served (and since the last
// pair that failed).
func (c *CertFiles) reload() {
	if !c.mu.TryLock() {
		return // another handshake is looking
	}
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.checked) < CertCheckInterval {
		return
	}
	c.checked = now
	cur := c.cur.Load()
	stamp := fileStamp{statID(c.certFile), statID(c.keyFile)}
	if stamp == cur.stamp || stamp == c.failed {
		return
	}
	cert, err := loadPair(c.certFile, c.keyFile, now)
	if err != nil {
		c.failed = stamp
		c.log.Error("api TLS: the changed certificate or key is not used; the previous certificate is still served", "err", err,
			"not_after", cur.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	c.failed = fileStamp{}
	c.cur.Store(&loadedCert{cert: cert, stamp: stamp})
	c.log.Info("api TLS: certificate reloaded", "cert_file", c.certFile, "subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// TLSConfig is the server's tls.Config: TLS 1.2 at least, Go's default
// cipher suites, the certificate of c.
func (c *CertFiles) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate}
}

// NewTLSServer is NewHTTPServer(h) serving over TLS with the certificate
// of c (http.Server.ServeTLS(ln, "", "")), HTTP/1.1 only (as Glance; the
// limits and error answers are those of HTTP/1.1). A plain HTTP request
// to it gets Go's 400 "Client sent an HTTP request to an HTTPS server."
// and its connection is closed.
func NewTLSServer(h http.Handler, c *CertFiles) *http.Server {
	srv := NewHTTPServer(h)
	srv.TLSConfig = c.TLSConfig()
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	return srv
}

// loadPair reads and checks the pair (LoadCertFiles) at time now.
func loadPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS cert_file: %w", err)
	}
	var chain [][]byte
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue // a key in the same file, parameters
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("api TLS cert_file %s: certificate %d is not a valid X.509 certificate: %v", certFile, len(chain)+1, err)
		}
		if leaf == nil {
			leaf = c
		}
		chain = append(chain, b.Bytes)
	}
	if leaf == nil {
		return nil, fmt.Errorf("api TLS cert_file %s: no PEM certificate in it (want -----BEGIN CERTIFICATE----- blocks: the server's certificate, then its chain)", certFile)
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("api TLS cert_file %s: the certificate (%s) expired on %s", certFile, leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("api TLS cert_file %s: the certificate (%s) is not valid before %s", certFile, leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))
	case len(leaf.ExtKeyUsage) > 0 && !hasServerAuth(leaf.ExtKeyUsage):
		return nil, fmt.Errorf("api TLS cert_file %s: the certificate (%s) is not for a server (its extended key usage lacks serverAuth)", certFile, leaf.Subject)
	}

	kf, err := os.Open(keyFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS key_file: %w", err)
	}
	defer kf.Close()
	fi, err := kf.Stat()
	if err != nil {
		return nil, fmt.Errorf("api TLS key_file: %w", err)
	}
	if err := privateKeyFile(keyFile, fi); err != nil {
		return nil, err
	}
	keyPEM, err := readAll(kf, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("api TLS key_file %s: %w", keyFile, err)
	}
	key, err := parseKey(keyFile, keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := key.(interface{ Public() crypto.PublicKey })
	if !ok {
		return nil, fmt.Errorf("api TLS key_file %s: an unsupported kind of key", keyFile)
	}
	eq, ok := pub.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !eq.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("api TLS key_file %s is not the key of the certificate in cert_file %s (%s; the server's own certificate comes first in cert_file, then its chain)", keyFile, certFile, leaf.Subject)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

func hasServerAuth(usages []x509.ExtKeyUsage) bool {
	for _, u := range usages {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// privateKeyFile refuses a key file others may read: it must be owned by
// the caller with no access for group or others, or by root with read
// access for its group at most (PostgreSQL's rule).
func privateKeyFile(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("api TLS key_file %s: not a regular file", path)
	}
	perm := fi.Mode().Perm()
	euid := os.Geteuid()
	owner := euid
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	switch {
	case owner != 0 && owner != euid:
		return fmt.Errorf("api TLS key_file %s holds a private key and is owned by uid %d, not by you or root: chown it", path, owner)
	case owner == 0 && perm&0o037 != 0:
		return fmt.Errorf("api TLS key_file %s holds a private key and is accessible by others (mode %04o): chmod 600 %s (or 640, read by its group)", path, perm, path)
	case owner != 0 && perm&0o077 != 0:
		return fmt.Errorf("api TLS key_file %s holds a private key and is accessible by group or others (mode %04o): chmod 600 %s", path, perm, path)
	}
	return nil
}

// readAll reads a key file of about size bytes (at most 1 MiB).
func readAll(f *os.File, size int64) ([]byte, error) {
	if size > 1<<20 {
		return nil, errors.New("larger than 1 MiB: not a key file")
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

// parseKey finds the private key in a PEM file. Its errors say what is
// wrong without quoting the file.
func parseKey(keyFile string, keyPEM []byte) (crypto.PrivateKey, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue // a certificate in the same file, EC parameters
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, fmt.Errorf("api TLS key_file %s: the private key is encrypted (a passphrase); give it unencrypted, mode 0600 (openssl pkey -in ENCRYPTED -out %s)", keyFile, keyFile)
		}
		if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			return k, nil
		}
		if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
			return k, nil
		}
		if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
			return k, nil
		}
		return nil, fmt.Errorf("api TLS key_file %s: its %s block is not a PKCS#8, PKCS#1 or SEC 1 private key", keyFile, b.Type)
	}
	return nil, fmt.Errorf("api TLS key_file %s: no PEM private key in it (want a -----BEGIN PRIVATE KEY----- block)", keyFile)
}
