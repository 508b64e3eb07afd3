package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRequestsPerFile counts the FUSE requests of the commands the
// performance suite times (TestBenchSuite, make bench), through the
// daemon's metrics, so that a change that makes each file cost more round
// trips again shows here and not only as a slower benchmark:
//   - ls -l images/ costs no request per image: READDIRPLUS gives the
//     entries and attributes, images/ itself is cached, and the ACL and
//     security label getxattr calls of ls are EOPNOTSUPP, after which ls
//     stops asking (ENODATA made it ask three times per image);
//   - closing a file opened read-only (a property file, sealed data) sends
//     no FLUSH.
func TestRequestsPerFile(t *testing.T) {
	requireTools(t, "ls", "grep", "cat", "setfattr")
	m := mount(t)
	m.Args = []string{"--metrics-addr", "127.0.0.1:0"}
	m.remount()
	addr := metricsAddrOf(t, m.log)
	const n = 40
	for i := range n {
		run(t, "mkdir", m.images(fmt.Sprintf("img-%02d", i)))
	}
	fx := makeVHD(t, 2*mib, "fixed")
	run(t, "cp", fx.Path, m.dataFile("img-00"))

	requests := func(ops ...string) (sum float64) {
		got := scrape(t, addr)
		for _, op := range ops {
			sum += got[fmt.Sprintf(`imagefs_fuse_requests_total{op=%q}`, op)]
		}
		return sum
	}
	perFile := []string{"lookup", "getattr", "getxattr", "listxattr"}

	sh(t, `ls -l "$1" >/dev/null`, m.images()) // the first look may ask for each image
	before := requests(perFile...)
	sh(t, `ls -l "$1" >/dev/null`, m.images())
	if got := requests(perFile...) - before; got >= n/4 {
		t.Errorf("ls -l images/ with %d images: %v lookup/getattr/getxattr requests, want fewer than %d", n, got, n/4)
	}

	for _, name := range []string{"security.selinux", "system.posix_acl_access", "trusted.x"} {
		_, err := unix.Getxattr(m.images("img-01"), name, make([]byte, 64))
		wantErrno(t, "getxattr "+name, err, unix.EOPNOTSUPP)
	}
	_, err := unix.Getxattr(m.images("img-01"), "user.no_such_key", make([]byte, 64))
	wantErrno(t, "getxattr user.no_such_key", err, unix.ENODATA)

	before, reads := requests("flush"), requests("read")
	out := sh(t, `cd "$1" && grep -l -x queued images/*/properties/status | wc -l && cat images/img-00/image.vhd >/dev/null`, m.Mnt)
	if strings.TrimSpace(out) != fmt.Sprint(n-1) {
		t.Errorf("grep -l found %q images, want %d", out, n-1)
	}
	if got := requests("flush") - before; got != 0 {
		t.Errorf("reading %d property files and the sealed data sent %v FLUSH requests, want none", n, got)
	}
	// The open of a property file puts its value in the page cache and
	// the sealed data is read by passthrough: no READ at all.
	if got := requests("read") - reads; got != 0 {
		t.Errorf("reading %d property files and the sealed data sent %v READ requests, want none", n, got)
	}

	// grep again: entries, attributes and pages of property files stay
	// cached until the image changes, so each file costs its OPEN and
	// nothing else. (The run right after a read may ask GETATTR once per
	// file: the kernel drops the cached atime after a READ.)
	grep := func() {
		out := sh(t, `cd "$1" && grep -l -x queued images/*/properties/status | wc -l`, m.Mnt)
		if strings.TrimSpace(out) != fmt.Sprint(n-1) {
			t.Errorf("grep -l found %q images, want %d", out, n-1)
		}
	}
	grep()
	before, opens := requests("lookup", "getattr", "read"), requests("open")
	grep()
	if got := requests("lookup", "getattr", "read") - before; got >= n/4 {
		t.Errorf("grep -l again over %d property files: %v lookup/getattr/read requests, want fewer than %d", n, got, n/4)
	}
	if got := requests("open") - opens; got != n {
		t.Errorf("grep -l again over %d property files: %v OPEN requests, want %d", n, got, n)
	}
	// A change through an xattr is read at once all the same.
	for _, v := range []string{"abc", "xyz"} {
		run(t, "setfattr", "-n", "user.os_distro", "-v", v, m.images("img-05"))
		if got := m.prop("img-05", "os_distro"); got != v {
			t.Errorf("os_distro after setfattr = %q, want %q", got, v)
		}
	}
}

// TestReaper: the kernel keeps every inode it has looked up, and the
// daemon a node for each, until memory runs short; the daemon's reaper
// (fs/reaper.go) lets the kernel keep --cache-nodes of them, and beyond
// that makes it drop the image directories beyond the most recently used
// 1,024 (FORGET follows). Those images stay usable: the next access looks
// them up again.
func TestReaper(t *testing.T) {
	requireTools(t, "ls")
	m := mount(t)
	m.Args = []string{"--metrics-addr", "127.0.0.1:0", "--cache-nodes", "2000"}
	m.remount()
	addr := metricsAddrOf(t, m.log)
	const n, known = 1200, 1024
	for i := range n {
		if err := os.Mkdir(m.images(fmt.Sprintf("img-%04d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	forgets := func() float64 { return scrape(t, addr)[`imagefs_fuse_requests_total{op="forget"}`] }
	// 1,200 image directories and nothing under them: within the budget
	// of 2,000 nodes, kept through two rounds of the reaper (2 s each).
	sh(t, `ls -l "$1" >/dev/null`, m.images())
	time.Sleep(4500 * time.Millisecond)
	if got := forgets(); got != 0 {
		t.Errorf("%v FORGET requests after ls -l of %d images (%d nodes allowed), want none", got, n, 2000)
	}
	// ls -lR: twenty nodes an image, far beyond the budget.
	sh(t, `ls -lR "$1" >/dev/null`, m.images())
	deadline := time.Now().Add(15 * time.Second)
	for forgets() < n-known {
		if time.Now().After(deadline) {
			t.Fatalf("%v FORGET requests 15 s after looking up %d images, want at least %d", forgets(), n, n-known)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{"img-0000", "img-0599", fmt.Sprintf("img-%04d", n-1)} {
		if got := m.prop(name, "name"); got != name {
			t.Errorf("properties/name of %s after the reaper = %q", name, got)
		}
	}
	if got := strings.Count(run(t, "ls", m.images()), "\n"); got != n {
		t.Errorf("ls images/ lists %d images after the reaper, want %d", got, n)
	}
}
