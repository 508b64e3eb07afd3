package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A test binary that imports this package is also a one-syscall helper:
// run with SysHelperEnv=1 (as another user, through setpriv: SysAs), it
// performs one operation on a path instead of running tests, prints its
// output on stdout and, on failure, "ERRNO step" (for example "EACCES
// open") on stderr with exit status 1 (2 on a usage error). Tests assert
// errnos this way rather than the wording of some tool.
//
// Operations (OP PATH [ARG...]):
//
//	stat         lstat: "mode(octal) uid size"
//	ls           the names of a directory, sorted, one a line
//	read         the file's bytes
//	write V      open (as sh's >), write V, close
//	create V     open O_CREAT|O_EXCL, write V, close
//	truncate N   truncate(2) to N bytes
//	mkdir, rmdir, unlink
//	rename DST   rename(2) onto DST
//	chmod MODE   chmod(2), MODE in octal
//	getxattr NAME, listxattr (names one a line), setxattr NAME V, removexattr NAME
const SysHelperEnv = "IMAGEFS_SYSCALL_HELPER"

func init() {
	if os.Getenv(SysHelperEnv) == "1" {
		os.Exit(sysHelperMain(os.Args[1:]))
	}
}

// sysHelperMain performs one operation and prints its output on stdout.
// On failure it prints "ERRNO step" (for example "EACCES open") on stderr
// and exits 1; on a usage error it exits 2.
func sysHelperMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: OP PATH [ARG...]")
		return 2
	}
	out, step, err := sysOp(args[0], args[1], args[2:])
	os.Stdout.Write(out)
	if err != nil {
		var en syscall.Errno
		if !errors.As(err, &en) {
			fmt.Fprintf(os.Stderr, "EUNKNOWN %s %v\n", step, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "%s %s\n", unix.ErrnoName(en), step)
		return 1
	}
	return 0
}

// sysOp performs op on path and returns its output, the step that failed
// and the error.
func sysOp(op, path string, args []string) ([]byte, string, error) {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	switch op {
	case "stat": // lstat: "mode(octal) uid size"
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return nil, "lstat", err
		}
		return fmt.Appendf(nil, "%o %d %d\n", st.Mode&0o7777, st.Uid, st.Size), "", nil
	case "ls": // one name per line
		f, err := os.Open(path)
		if err != nil {
			return nil, "open", errnoOrErr(err)
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return nil, "getdents", errnoOrErr(err)
		}
		slices.Sort(names)
		var b bytes.Buffer
		for _, n := range names {
			b.WriteString(n + "\n")
		}
		return b.Bytes(), "", nil
	case "read": // the file's bytes
		f, err := os.Open(path)
		if err != nil {
			return nil, "open", errnoOrErr(err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return b, "read", errnoOrErr(err)
		}
		return b, "", nil
	case "write", "create": // open (as sh's >, or O_CREAT|O_EXCL), write, close
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if op == "create" {
			flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
		}
		f, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			return nil, "open", errnoOrErr(err)
		}
		if _, err := f.WriteString(arg(0)); err != nil {
			f.Close()
			return nil, "write", errnoOrErr(err)
		}
		if err := f.Close(); err != nil {
			return nil, "close", errnoOrErr(err)
		}
		return nil, "", nil
	case "truncate":
		n, _ := strconv.ParseInt(arg(0), 10, 64)
		return nil, "truncate", syscall.Truncate(path, n)
	case "mkdir":
		return nil, "mkdir", syscall.Mkdir(path, 0o755)
	case "rmdir":
		return nil, "rmdir", syscall.Rmdir(path)
	case "unlink":
		return nil, "unlink", syscall.Unlink(path)
	case "rename":
		return nil, "rename", syscall.Rename(path, arg(0))
	case "chmod":
		n, _ := strconv.ParseUint(arg(0), 8, 32)
		return nil, "chmod", syscall.Chmod(path, uint32(n))
	case "getxattr":
		buf := make([]byte, 1<<17)
		n, err := unix.Lgetxattr(path, arg(0), buf)
		if err != nil {
			return nil, "getxattr", err
		}
		return buf[:n], "", nil
	case "listxattr":
		buf := make([]byte, 1<<17)
		n, err := unix.Llistxattr(path, buf)
		if err != nil {
			return nil, "listxattr", err
		}
		names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
		return []byte(strings.Join(names, "\n") + "\n"), "", nil
	case "setxattr":
		return nil, "setxattr", unix.Lsetxattr(path, arg(0), []byte(arg(1)), 0)
	case "removexattr":
		return nil, "removexattr", unix.Lremovexattr(path, arg(0))
	}
	return nil, "usage", fmt.Errorf("unknown op %q", op)
}

// ErrnoByName returns the errno named name ("EACCES"), or 0.
func ErrnoByName(name string) syscall.Errno {
	for e := syscall.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}

func errnoOrErr(err error) error {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}

// SysHelper returns the path of a copy of the running test binary that
// other users may run (the go-build directory is 0700): in t.TempDir(),
// mode 0755, its directories searchable by others (ChmodPathForOthers).
func SysHelper(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "syshelper")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	ChmodPathForOthers(t, dst)
	return dst
}

// ChmodPathForOthers lets other users reach path: t.TempDir() makes its
// directories 0700, so it adds search and read permission for others
// (o+rx) on each directory above path, up to os.TempDir() or /.
func ChmodPathForOthers(t testing.TB, path string) {
	t.Helper()
	for dir := filepath.Dir(path); dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(dir, fi.Mode().Perm()|0o005); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// SetprivArgs returns the arguments of setpriv(1) that run a command (which
// follows them) as uid, with gid uid and no supplementary groups; with
// caps, also with CAP_DAC_OVERRIDE and CAP_FOWNER (still not uid 0: the
// kernel's mode and sticky-bit checks pass, so a request reaches the
// filesystem, which must refuse it by itself).
func SetprivArgs(uid string, caps bool) []string {
	pargs := []string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups"}
	if caps {
		pargs = append(pargs, "--inh-caps=+dac_override,+fowner", "--ambient-caps=+dac_override,+fowner")
	}
	return pargs
}

// SysResult is what one SysAs call did.
type SysResult struct {
	Out   string        // the operation's output (stdout)
	Errno syscall.Errno // 0 for success
	Step  string        // the step that failed ("open", "write", ...)
	// Stderr, Code and Err are the helper process's: Err is non-nil with
	// Errno 0 when the helper itself failed (not started, usage, killed).
	Stderr string
	Code   int
	Err    error
}

func (r SysResult) String() string {
	if r.Errno == 0 && r.Err == nil {
		return "success"
	}
	if r.Errno == 0 {
		return fmt.Sprintf("helper failed: exit %d (%v): %s", r.Code, r.Err, r.Stderr)
	}
	return fmt.Sprintf("%s at %s", unix.ErrnoName(r.Errno), r.Step)
}

// Run runs name with args in os.TempDir() (outside any mount) and
// returns its standard output and error, its exit status (-1 when a
// signal killed it or it did not start) and cmd.Run's error.
func Run(name string, args ...string) (stdout, stderr string, code int, err error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = os.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		code = -1
	}
	return out.String(), errb.String(), code, err
}

// SysAs runs one operation of the helper (SysHelper's path) through
// setpriv with priv (SetprivArgs) and returns what happened. It runs in
// os.TempDir(), outside any mount.
func SysAs(helper string, priv []string, op, path string, args ...string) SysResult {
	pargs := append(slices.Clone(priv), "env", SysHelperEnv+"=1", helper, op, path)
	var res SysResult
	res.Out, res.Stderr, res.Code, res.Err = Run("setpriv", append(pargs, args...)...)
	if res.Code == 1 {
		if f := strings.Fields(res.Stderr); len(f) >= 2 {
			res.Step = f[1]
			res.Errno = ErrnoByName(f[0])
		}
	}
	return res
}
