package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
	"golang.org/x/sys/unix"
)

// Tests of issue #12 item 2: after the owner revokes another user's access
// to an image (removes the uid from members, or changes the visibility),
// no request of that user's answers with a value set after it, through
// descriptors and a working directory opened before: openat, getxattr,
// fgetxattr, flistxattr, readdir of properties/ and a read of an open
// property file all fail with ENOENT, as for an image the user never saw.
// Open data descriptors keep reading the sealed bytes.
//
// The user holds its descriptors in heldHelper: the test binary (testutil.SysHelper's
// copy), run as that user with setpriv, which reads one command a line and
// answers each with one line.

// heldHelperEnv makes the test binary a held-descriptor helper
// (heldHelperMain) instead of running tests.
const heldHelperEnv = "IMAGEFS_HELD_HELPER"

func init() {
	if os.Getenv(heldHelperEnv) == "1" {
		os.Exit(heldHelperMain(os.Stdin, os.Stdout))
	}
}

// heldHelperMain reads commands, one a line, fields separated by tabs,
// and answers each with "ok VALUE" (VALUE quoted as Go does) or
// "err ERRNO". A descriptor is named by the command that opened it; the
// name "." is the working directory.
//
//	open NAME PATH        open(PATH, O_RDONLY)
//	cd NAME               fchdir
//	readat NAME REL       openat(NAME, REL), read it all, close
//	pread NAME            pread(NAME, 4 KiB, offset 0)
//	fgetxattr NAME ATTR   fgetxattr
//	flistxattr NAME       flistxattr: the names, one a line
//	getxattr REL ATTR     lgetxattr of a path relative to the working directory
//	readdir NAME          lseek(NAME, 0) and getdents: the names, one a line
func heldHelperMain(in io.Reader, out io.Writer) int {
	fds := map[string]int{".": unix.AT_FDCWD}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		v, err := heldOp(fds, f)
		if err != nil {
			var en syscall.Errno
			if errors.As(err, &en) {
				fmt.Fprintf(out, "err %s\n", unix.ErrnoName(en))
			} else {
				fmt.Fprintf(out, "err %q\n", err.Error())
			}
			continue
		}
		fmt.Fprintf(out, "ok %q\n", v)
	}
	return 0
}

func heldOp(fds map[string]int, f []string) (string, error) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	fd, known := fds[arg(1)]
	if f[0] != "open" && f[0] != "getxattr" && !known {
		return "", fmt.Errorf("no descriptor %q", arg(1))
	}
	buf := make([]byte, 1<<16)
	switch f[0] {
	case "open":
		n, err := unix.Open(arg(2), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		fds[arg(1)] = n
		return "", nil
	case "cd":
		return "", unix.Fchdir(fd)
	case "readat":
		n, err := unix.Openat(fd, arg(2), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(n)
		var b []byte
		for {
			k, err := unix.Read(n, buf)
			if err != nil {
				return string(b), err
			}
			if k == 0 {
				return string(b), nil
			}
			b = append(b, buf[:k]...)
		}
	case "pread":
		n, err := unix.Pread(fd, buf[:4096], 0)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case "fgetxattr":
		n, err := unix.Fgetxattr(fd, arg(2), buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case "flistxattr":
		n, err := unix.Flistxattr(fd, buf)
		if err != nil {
			return "", err
		}
		return strings.ReplaceAll(string(buf[:n]), "\x00", "\n"), nil
	case "getxattr":
		n, err := unix.Lgetxattr(arg(1), arg(2), buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case "readdir":
		if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
			return "", err
		}
		var names []string
		for {
			n, err := unix.Getdents(fd, buf)
			if err != nil {
				return strings.Join(names, "\n"), err
			}
			if n == 0 {
				return strings.Join(names, "\n"), nil
			}
			_, _, names = unix.ParseDirent(buf[:n], -1, names)
		}
	}
	return "", fmt.Errorf("unknown command %q", f[0])
}

// held is a running heldHelper as one user.
type held struct {
	t    testing.TB
	who  string
	cmd  *exec.Cmd
	in   io.WriteCloser
	outs *bufio.Scanner
}

// hold starts a held-descriptor helper as u; it is stopped at the end of
// the test.
func (u actor) hold() *held {
	u.t.Helper()
	args := append(u.privArgs(), "env", heldHelperEnv+"=1", u.helper)
	cmd := exec.Command("setpriv", args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		u.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		u.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	h := &held{t: u.t, who: u.name(), cmd: cmd, in: in, outs: bufio.NewScanner(out)}
	h.outs.Buffer(nil, 1<<20)
	u.t.Cleanup(func() {
		in.Close()         // the helper exits at the end of its input,
		cmd.Process.Kill() // or now if it is stuck writing an answer
		cmd.Wait()
	})
	return h
}

// do sends one command and returns its value and errno (0: success).
func (h *held) do(args ...string) (string, syscall.Errno) {
	h.t.Helper()
	fmt.Fprintln(h.in, strings.Join(args, "\t"))
	if !h.outs.Scan() {
		h.t.Fatalf("%s: held helper: %q: no answer (%v)", h.who, args, h.outs.Err())
	}
	line := h.outs.Text()
	if v, ok := strings.CutPrefix(line, "ok "); ok {
		s, err := strconv.Unquote(v)
		if err != nil {
			h.t.Fatalf("%s: held helper: %q: answer %q", h.who, args, line)
		}
		return s, 0
	}
	name, _ := strings.CutPrefix(line, "err ")
	en := testutil.ErrnoByName(name)
	if en == 0 {
		h.t.Fatalf("%s: held helper: %q: %s", h.who, args, line)
	}
	return "", en
}

// must runs a command that must succeed and returns its value.
func (h *held) must(args ...string) string {
	h.t.Helper()
	v, en := h.do(args...)
	if en != 0 {
		h.t.Fatalf("%s: %q: %s", h.who, args, unix.ErrnoName(en))
	}
	return v
}

// revokeCase grants uid 1002 access to an image of uid 1001 and takes it
// away again.
type revokeCase struct {
	name          string
	grant, revoke func(a *accessMount, name string)
}

var revokeCases = []revokeCase{
	{"members",
		func(a *accessMount, name string) {
			a.as(userA).must("write", a.propFile(name, "visibility"), "shared\n")
			a.as(userA).must("write", a.propFile(name, "members"), userB+"\n")
			a.acceptAs(a.t, userB, name)
		},
		func(a *accessMount, name string) {
			a.as(userA).must("write", a.propFile(name, "members"), userC+"\n")
		}},
	{"visibility",
		func(a *accessMount, name string) {
			// Only root makes an image public.
			if err := os.WriteFile(a.propFile(name, "visibility"), []byte("public\n"), 0o644); err != nil {
				a.t.Fatal(err)
			}
		},
		func(a *accessMount, name string) {
			a.as(userA).must("write", a.propFile(name, "visibility"), "private\n")
		}},
}

// TestRevokedAccessHeldDescriptors: uid 1002 opens an image's directory
// (by name and by id), its properties/, a property file and image.vhd, and
// makes the image directory its working directory, while it may see the
// image; the owner then revokes that access, changes a property and adds
// one, and reads them (so the kernel's page cache holds the new values).
// Every request of uid 1002 through what it holds then fails with ENOENT
// and shows none of the new values; its open image.vhd keeps reading the
// sealed bytes.
func TestRevokedAccessHeldDescriptors(t *testing.T) {
	for _, rc := range revokeCases {
		t.Run(rc.name, func(t *testing.T) {
			a := mountAllowOther(t)
			fx := sharedFixture(t)
			const name = "rv"
			id := a.ownedImage(userA, name, fx)
			A, B := a.as(userA), a.as(userB)
			rc.grant(a, name)

			h := B.hold()
			h.must("open", "dir", a.images(name))
			h.must("open", "byid", a.byID(id))
			h.must("open", "props", a.images(name, "properties"))
			h.must("open", "file", a.propFile(name, "os_distro"))
			h.must("open", "data", a.dataFile(name))
			h.must("cd", "dir")
			// While it may, uid 1002 reads through all of them.
			if got := h.must("pread", "file"); got != "superos\n" {
				t.Fatalf("before the revocation: read of the open os_distro = %q, want superos", got)
			}
			if got := h.must("readat", ".", "properties/os_distro"); got != "superos\n" {
				t.Fatalf("before the revocation: cat properties/os_distro in the image directory = %q", got)
			}
			if got := h.must("fgetxattr", "dir", "user.os_distro"); got != "superos" {
				t.Fatalf("before the revocation: fgetxattr user.os_distro = %q", got)
			}
			sealed := h.must("pread", "data")

			rc.revoke(a, name)
			A.must("write", a.propFile(name, "os_distro"), "leaked\n")
			A.must("create", a.propFile(name, "secret"), "s3cr3t\n")
			// The owner's reads fill the kernel's pages with the new
			// values, which every user's reads share.
			if got := A.must("read", a.propFile(name, "os_distro")); got != "leaked\n" {
				t.Fatalf("owner: os_distro = %q after setting it", got)
			}
			A.must("read", a.propFile(name, "secret"))
			if got := readProp(t, a.propFile(name, "os_distro")); got != "leaked" {
				t.Fatalf("root: os_distro = %q after the owner set it", got)
			}

			checks := [][]string{
				{"readat", "dir", "properties/os_distro"},
				{"readat", "dir", "properties/secret"},
				{"readat", "byid", "properties/os_distro"},
				{"readat", "props", "os_distro"},
				{"readat", "props", "secret"},
				{"readat", ".", "properties/os_distro"},
				{"readat", ".", "properties/secret"},
				{"pread", "file"},
				{"readdir", "props"},
				{"readdir", "dir"},
				{"fgetxattr", "dir", "user.os_distro"},
				{"fgetxattr", "dir", "user.secret"},
				{"fgetxattr", "byid", "user.os_distro"},
				{"fgetxattr", "data", "user.os_distro"},
				{"fgetxattr", "props", "user.secret"},
				{"fgetxattr", "file", "user.os_distro"},
				{"getxattr", "image.vhd", "user.os_distro"},
				{"getxattr", ".", "user.secret"},
				{"getxattr", "properties", "user.secret"},
				{"flistxattr", "dir"},
				{"flistxattr", "data"},
				{"flistxattr", "props"},
			}
			for _, c := range checks {
				v, en := h.do(c...)
				if strings.Contains(v, "leaked") || strings.Contains(v, "secret") || strings.Contains(v, "s3cr3t") {
					t.Errorf("uid %s after the revocation: %q answered %q: a value set after it", userB, c, v)
				}
				if en != syscall.ENOENT {
					t.Errorf("uid %s after the revocation: %q: %q, errno %v, want ENOENT", userB, c, v, en)
				}
			}
			// Open data keeps reading the sealed bytes, as on any
			// filesystem; a new open is refused.
			if got := h.must("pread", "data"); got != sealed {
				t.Errorf("uid %s after the revocation: the open image.vhd reads other bytes", userB)
			}
			if v, en := h.do("readat", "dir", "image.vhd"); en != syscall.ENOENT {
				t.Errorf("uid %s after the revocation: open image.vhd through the held directory: %d bytes, errno %v, want ENOENT", userB, len(v), en)
			}
			// The owner's and root's held views are untouched.
			if got := A.must("read", a.propFile(name, "os_distro")); got != "leaked\n" {
				t.Errorf("owner: os_distro = %q", got)
			}
		})
	}
}

// TestPropertyPagesPerUser: with --allow-other, a property file's pages in
// the kernel are shared by all users. The owner's reads stay in them (grep
// over properties/ sends no READ); a member's reads go past them to the
// daemon (one READ a file at least), which checks the member's access on
// each; and the member's opens leave the owner's pages in place.
func TestPropertyPagesPerUser(t *testing.T) {
	requireTools(t, "grep")
	a := mountAllowOther(t, "--metrics-addr", "127.0.0.1:0")
	addr := metricsAddrOf(t, a.log)
	reads := func() float64 { return scrape(t, addr)[`imagefs_fuse_requests_total{op="read"}`] }
	const n = 20
	for i := range n {
		dir := a.images(fmt.Sprintf("pg-%02d", i))
		mustAsUser(t, userA, `mkdir "$1" && echo shared > "$1/properties/visibility" && echo 1002 > "$1/properties/members" && echo superos > "$1/properties/os_distro"`, dir)
		a.acceptAs(t, userB, fmt.Sprintf("pg-%02d", i))
	}
	grep := func(uid string) {
		t.Helper()
		out := mustAsUser(t, uid, `cd "$1" && grep -l -x superos images/*/properties/os_distro | wc -l`, a.Mnt)
		if strings.TrimSpace(out) != fmt.Sprint(n) {
			t.Fatalf("uid %s: grep -l found %q images, want %d", uid, out, n)
		}
	}
	grep(userA)
	before := reads()
	grep(userA)
	if got := reads() - before; got != 0 {
		t.Errorf("owner: grep over %d property files sent %v READ requests, want none (page cache)", n, got)
	}
	before = reads()
	grep(userB)
	if got := reads() - before; got < n {
		t.Errorf("member: grep over %d property files sent %v READ requests, want at least %d (past the page cache)", n, got, n)
	}
	before = reads()
	grep(userA)
	if got := reads() - before; got != 0 {
		t.Errorf("owner after the member's grep: %v READ requests, want none (the member's opens keep the pages)", got)
	}
}
