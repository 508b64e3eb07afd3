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

// EtcdPort is the first client port of the test cluster of
// scripts/etcd.sh: IMAGEFS_ETCD_PORT (as the script reads it), default
// 23790; its members listen on loopback at EtcdPort, +1 and +2.
func EtcdPort() int {
	if p, err := strconv.Atoi(os.Getenv("IMAGEFS_ETCD_PORT")); err == nil && p > 0 {
		return p
	}
	return 23790
}

// etcdEndpoints are the test cluster's client endpoints (EtcdPort).
func etcdEndpoints() []string {
	p := EtcdPort()
	return []string{"127.0.0.1:" + strconv.Itoa(p), "127.0.0.1:" + strconv.Itoa(p+1), "127.0.0.1:" + strconv.Itoa(p+2)}
}

var etcdState struct {
	once   sync.Once
	script string // scripts/etcd.sh, once found
	dir    string // the cluster's directory
	eps    []string
	skip   string // why the cluster is not available (no root, no etcd), outside CI
	err    error
	user   bool // this process registered as a user of the cluster
}

// EtcdDir is the directory of the test cluster (scripts/etcd.sh's
// IMAGEFS_ETCD_DIR, default /tmp/imagefs-etcd).
func EtcdDir() string {
	if d := os.Getenv("IMAGEFS_ETCD_DIR"); d != "" {
		return d
	}
	return "/tmp/imagefs-etcd"
}

// EtcdScript runs scripts/etcd.sh with args (start, stop-member N, ...)
// and returns its combined output; a failure fails tb.
func EtcdScript(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(filepath.Join(ModuleRoot(tb), "scripts", "etcd.sh"), args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("scripts/etcd.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// EtcdEndpoints returns the client endpoints of the 3-member test cluster
// of scripts/etcd.sh, starting it (and installing etcd, as root) the
// first time a process asks when it is not running. Without root or
// etcd the test is skipped, or fails when CI=true. Several test
// processes (go test runs packages in parallel) share the cluster: each
// registers as a user under EtcdDir()/users, and StopServices in the last
// one to finish stops a cluster that a test process started. A cluster
// that was running before any test (an operator's) is never stopped.
func EtcdEndpoints(tb testing.TB) []string {
	tb.Helper()
	s := &etcdState
	s.once.Do(func() {
		s.script = filepath.Join(ModuleRoot(tb), "scripts", "etcd.sh")
		s.dir = EtcdDir()
		if os.Geteuid() != 0 {
			if _, err := exec.LookPath("etcd"); err != nil {
				s.skip = "etcd is not installed and installing it needs root (sudo apt-get install etcd-server etcd-client)"
				return
			}
		}
		s.err = etcdRegister(s.script, s.dir)
		if s.err == nil {
			s.eps = etcdEndpoints()
			s.user = true
		}
	})
	if s.skip != "" {
		SkipOrFail(tb, "%s", s.skip)
	}
	if s.err != nil {
		tb.Fatalf("test etcd cluster: %v", s.err)
	}
	return append([]string(nil), s.eps...)
}

// etcdLock holds an exclusive flock on dir/.lock (between test processes).
func etcdLock(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// etcdRegister makes sure the cluster runs (starting it, marked as started
// by tests, when it does not) and registers this process as a user.
func etcdRegister(script, dir string) error {
	unlock, err := etcdLock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	marker := filepath.Join(dir, "started-by-tests")
	if exec.Command(script, "status").Run() != nil {
		// Not running, or some member is down (a test stopped it and
		// died): start what is missing. If no member ran, tests own it.
		_, statErr := os.Stat(marker)
		anyUp := false
		for n := 1; n <= 3; n++ {
			if b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("m%d", n), "pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
					anyUp = true
				}
			}
		}
		cmd := exec.Command(script, "start")
		done := make(chan struct{})
		timer := time.AfterFunc(5*time.Minute, func() { // an apt-get install included
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
			close(done)
		})
		out, err := cmd.CombinedOutput()
		if !timer.Stop() {
			<-done
		}
		if err != nil {
			return fmt.Errorf("scripts/etcd.sh start: %v\n%s", err, out)
		}
		if !anyUp || statErr == nil {
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				return err
			}
		}
	}
	users := filepath.Join(dir, "users")
	if err := os.MkdirAll(users, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(users, strconv.Itoa(os.Getpid())), nil, 0o644)
}

// StopServices is for TestMain, after m.Run: this process stops being a
// user of the test etcd cluster (and of the test Swift, SwiftAuth, and
// Keystone, KeystoneServer), and
// stops each when it was started by a test process and no other live test
// process uses it. It does nothing for a service this process did not ask
// for.
func StopServices() {
	stopSwift()
	stopKeystone()
	s := &etcdState
	if !s.user {
		return
	}
	s.user = false
	unlock, err := etcdLock(s.dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testutil: etcd lock: %v\n", err)
		return
	}
	defer unlock()
	users := filepath.Join(s.dir, "users")
	os.Remove(filepath.Join(users, strconv.Itoa(os.Getpid())))
	ents, _ := os.ReadDir(users)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && syscall.Kill(pid, 0) == nil {
			return // another test process still uses it
		}
		os.Remove(filepath.Join(users, e.Name()))
	}
	marker := filepath.Join(s.dir, "started-by-tests")
	if _, err := os.Stat(marker); err != nil {
		return // an operator's cluster
	}
	if out, err := exec.Command(s.script, "stop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "testutil: scripts/etcd.sh stop: %v\n%s", err, out)
		return
	}
	os.Remove(marker)
}
