package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Swift is the test Swift of scripts/swift.sh: a tempauth (v1) account.
// Its fields are what a client's ST_AUTH, ST_USER and ST_KEY hold.
type Swift struct {
	AuthURL string // http://127.0.0.1:PORT/auth/v1.0
	User    string // test:tester
	Key     string // testing
	Dir     string // IMAGEFS_SWIFT_DIR: data (srv/node/d1), logs (log/), pids (run/)
}

// Env returns the ST_* variables of s (for a daemon's or the swift CLI's
// environment).
func (s Swift) Env() []string {
	return []string{"ST_AUTH=" + s.AuthURL, "ST_USER=" + s.User, "ST_KEY=" + s.Key}
}

var swiftState struct {
	once   sync.Once
	script string
	dir    string
	skip   string
	err    error
	user   bool
}

// SwiftDir is the directory of the test Swift (scripts/swift.sh's
// IMAGEFS_SWIFT_DIR, default /tmp/imagefs-swift).
func SwiftDir() string {
	if d := os.Getenv("IMAGEFS_SWIFT_DIR"); d != "" {
		return d
	}
	return "/tmp/imagefs-swift"
}

// SwiftPort is the proxy port of the test Swift: IMAGEFS_SWIFT_PORT (as
// scripts/swift.sh reads it), default 28080.
func SwiftPort() int {
	if p, err := strconv.Atoi(os.Getenv("IMAGEFS_SWIFT_PORT")); err == nil && p > 0 {
		return p
	}
	return 28080
}

// SwiftScript runs scripts/swift.sh with args (start, stop, status) and
// returns its combined output; a failure fails tb.
func SwiftScript(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(filepath.Join(ModuleRoot(tb), "scripts", "swift.sh"), args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("scripts/swift.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// SwiftAuth returns the account of the test Swift of scripts/swift.sh,
// starting it (and installing its Debian packages, as root) the first
// time a process asks when it does not run. Without root or the packages
// the test is skipped, or fails when CI=true. Test processes share it as
// they share the etcd cluster (EtcdEndpoints): each registers under
// SwiftDir()/users, and StopServices in the last one stops a Swift that a
// test process started; an operator's Swift is never stopped.
func SwiftAuth(tb testing.TB) Swift {
	tb.Helper()
	s := &swiftState
	s.once.Do(func() {
		s.script = filepath.Join(ModuleRoot(tb), "scripts", "swift.sh")
		s.dir = SwiftDir()
		if os.Geteuid() != 0 {
			if _, err := exec.LookPath("swift-proxy-server"); err != nil {
				s.skip = "Swift is not installed and installing it needs root (sudo apt-get install swift swift-proxy swift-account swift-container swift-object memcached)"
				return
			}
		}
		s.err = serviceRegister(s.script, s.dir, 5*time.Minute)
		s.user = s.err == nil
	})
	if s.skip != "" {
		SkipOrFail(tb, "%s", s.skip)
	}
	if s.err != nil {
		tb.Fatalf("test Swift: %v", s.err)
	}
	return Swift{
		AuthURL: fmt.Sprintf("http://127.0.0.1:%d/auth/v1.0", SwiftPort()),
		User:    "test:tester", Key: "testing", Dir: s.dir,
	}
}

// serviceRegister makes sure the service of script runs (starting it,
// marked as started by tests, when its status fails) and registers this
// process as a user under dir/users. A start has timeout (apt-get
// included).
func serviceRegister(script, dir string, timeout time.Duration) error {
	unlock, err := etcdLock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	marker := filepath.Join(dir, "started-by-tests")
	if exec.Command(script, "status").Run() != nil {
		cmd := exec.Command(script, "start")
		timer := time.AfterFunc(timeout, func() {
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
		})
		out, err := cmd.CombinedOutput()
		timer.Stop()
		if err != nil {
			return fmt.Errorf("%s start: %v\n%s", filepath.Base(script), err, out)
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
	}
	users := filepath.Join(dir, "users")
	if err := os.MkdirAll(users, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(users, strconv.Itoa(os.Getpid())), nil, 0o644)
}

// serviceUnregister is StopServices for one service: this process stops
// being a user; the last live user stops a service tests started.
func serviceUnregister(script, dir string) {
	unlock, err := etcdLock(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testutil: %s lock: %v\n", dir, err)
		return
	}
	defer unlock()
	users := filepath.Join(dir, "users")
	os.Remove(filepath.Join(users, strconv.Itoa(os.Getpid())))
	ents, _ := os.ReadDir(users)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && syscall.Kill(pid, 0) == nil {
			return // another test process still uses it
		}
		os.Remove(filepath.Join(users, e.Name()))
	}
	marker := filepath.Join(dir, "started-by-tests")
	if _, err := os.Stat(marker); err != nil {
		return // an operator's service
	}
	if out, err := exec.Command(script, "stop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "testutil: %s stop: %v\n%s", filepath.Base(script), err, out)
		return
	}
	os.Remove(marker)
}

// stopSwift is StopServices' part for the test Swift.
func stopSwift() {
	s := &swiftState
	if !s.user {
		return
	}
	s.user = false
	serviceUnregister(s.script, s.dir)
}
