package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"

	"github.com/imagefs/imagefs/store"
)

// testMount is a store served in this process: the harness of fs's own
// tests (go-fuse's fs/simple_test.go newTestCase is the model). Requests
// made with syscalls on mnt reach the handlers of this package in this
// process, so coverage, -race and stack traces see them.
type testMount struct {
	t    *testing.T
	mnt  string // the mountpoint
	st   *store.Store
	fsys *FS
	conn string // /sys/fs/fuse/connections/N of the mount ("" unknown)
}

// mountConfig configures newTestMount.
type mountConfig struct {
	store store.Options
	fs    Options
}

// requireFUSE skips the test when it cannot mount (not root, no
// /dev/fuse), and fails it instead when CI=true.
func requireFUSE(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "not root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "no /dev/fuse: " + err.Error()
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and the in-process FUSE tests cannot run: %s", reason)
	}
	t.Skipf("cannot mount: %s", reason)
}

// newTestMount opens a store in t.TempDir() and mounts it in another
// t.TempDir(); t.Cleanup unmounts it, waits for the server and closes the
// store.
func newTestMount(t *testing.T, cfg mountConfig) *testMount {
	t.Helper()
	requireFUSE(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "store"), cfg.store)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	mnt := t.TempDir()
	fsys, err := Mount(st, mnt, cfg.fs)
	if err != nil {
		st.Close()
		t.Fatalf("mount: %v", err)
	}
	m := &testMount{t: t, mnt: mnt, st: st, fsys: fsys}
	var sb syscall.Stat_t
	if err := syscall.Stat(mnt, &sb); err == nil {
		m.conn = fmt.Sprintf("/sys/fs/fuse/connections/%d", sb.Dev)
	}
	t.Cleanup(func() {
		var err error
		for i := 0; i < 50; i++ { // a descriptor released a moment ago
			if err = fsys.Unmount(); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			m.abort()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		fsys.Wait()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return m
}

// abort aborts the mount's FUSE connection: every request waiting for
// an answer fails with ENOTCONN. A test whose request never gets an
// answer calls it, because a thread of this process blocked in a request
// to this process's own mount would keep the test binary from exiting.
func (m *testMount) abort() {
	if m.conn == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(m.conn, "abort"), []byte("1"), 0); err != nil {
		m.t.Errorf("abort %s: %v", m.conn, err)
	}
}

// path returns the path of rel under the mountpoint.
func (m *testMount) path(rel ...string) string {
	return filepath.Join(append([]string{m.mnt}, rel...)...)
}

// mkdir makes images/<name> and returns the image's id.
func (m *testMount) mkdir(name string) string {
	m.t.Helper()
	if err := os.Mkdir(m.path("images", name), 0o755); err != nil {
		m.t.Fatalf("mkdir images/%s: %v", name, err)
	}
	return m.prop(name, "id")
}

// prop reads images/<name>/properties/<key> without its newline.
func (m *testMount) prop(name, key string) string {
	m.t.Helper()
	b, err := os.ReadFile(m.path("images", name, "properties", key))
	if err != nil {
		m.t.Fatalf("read images/%s/properties/%s: %v", name, key, err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// writeFile writes b to path as cp does (open O_WRONLY|O_CREAT|O_TRUNC,
// write, close) and returns the first error.
func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// upload makes images/<name> and uploads data into its image.vhd; it
// returns the image's id.
func (m *testMount) upload(name string, data []byte) string {
	m.t.Helper()
	id := m.mkdir(name)
	if err := writeFile(m.path("images", name, "image.vhd"), data); err != nil {
		m.t.Fatalf("upload images/%s/image.vhd: %v", name, err)
	}
	if s := m.prop(name, "status"); s != "active" {
		m.t.Fatalf("images/%s: status %q after the upload, want active", name, s)
	}
	return id
}

// wantErrno fails unless err is errno.
func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if !errors.Is(err, errno) {
		t.Errorf("%s: got %v, want %v (%d)", what, err, errno, int(errno))
	}
}

// noErr fails the test now if err is not nil.
func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// fixedVHD is testutil.FixedVHD.
func fixedVHD(t testing.TB, dataSize int) []byte { return testutil.FixedVHD(t, dataSize) }
