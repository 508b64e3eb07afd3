package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Keystone is the test Keystone of scripts/keystone.sh: its identity
// URL, and its accounts (user, project, roles, password) and project ids
// as the script wrote them.
type Keystone struct {
	AuthURL  string            // http://127.0.0.1:PORT/v3
	Dir      string            // IMAGEFS_KEYSTONE_DIR
	Projects map[string]string // project name -> id
	accounts map[string]KeystoneAccount
}

// KeystoneAccount is one user of the test Keystone.
type KeystoneAccount struct {
	User, Project, Password string
	Roles                   []string
}

// Account returns the account of user (admin, tu1..tu4, tuadm, imagefs);
// an unknown user fails tb.
func (k Keystone) Account(tb testing.TB, user string) KeystoneAccount {
	tb.Helper()
	a, ok := k.accounts[user]
	if !ok {
		tb.Fatalf("test Keystone has no user %q", user)
	}
	return a
}

var keystoneState struct {
	once   sync.Once
	script string
	dir    string
	skip   string
	err    error
	user   bool
}

// KeystoneDir is the state directory of the test Keystone
// (scripts/keystone.sh's IMAGEFS_KEYSTONE_DIR, default /tmp/imagefs-keystone).
func KeystoneDir() string {
	if d := os.Getenv("IMAGEFS_KEYSTONE_DIR"); d != "" {
		return d
	}
	return "/tmp/imagefs-keystone"
}

// KeystonePort is the port of the test Keystone: IMAGEFS_KEYSTONE_PORT,
// default 25000.
func KeystonePort() int {
	if p, err := strconv.Atoi(os.Getenv("IMAGEFS_KEYSTONE_PORT")); err == nil && p > 0 {
		return p
	}
	return 25000
}

// KeystoneServer returns the test Keystone of scripts/keystone.sh,
// starting it the first time a process asks when it does not run (as
// SwiftAuth starts Swift; StopServices in the last test process using it
// stops a Keystone tests started). Without root or python3-keystone the
// test is skipped, or fails when CI=true.
func KeystoneServer(tb testing.TB) Keystone {
	tb.Helper()
	s := &keystoneState
	s.once.Do(func() {
		s.script = filepath.Join(ModuleRoot(tb), "scripts", "keystone.sh")
		s.dir = KeystoneDir()
		if os.Geteuid() != 0 {
			if _, err := os.Stat("/usr/bin/keystone-manage"); err != nil {
				s.skip = "Keystone is not installed and installing it needs root (sudo apt-get install python3-keystone)"
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
		tb.Fatalf("test Keystone: %v", s.err)
	}
	k := Keystone{
		AuthURL:  fmt.Sprintf("http://127.0.0.1:%d/v3", KeystonePort()),
		Dir:      s.dir,
		Projects: map[string]string{},
		accounts: map[string]KeystoneAccount{},
	}
	for _, f := range []string{"projects", "credentials"} {
		b, err := os.ReadFile(filepath.Join(s.dir, f))
		if err != nil {
			tb.Fatalf("test Keystone: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			w := strings.Fields(line)
			switch {
			case f == "projects" && len(w) == 2:
				k.Projects[w[0]] = w[1]
			case f == "credentials" && len(w) == 4:
				k.accounts[w[0]] = KeystoneAccount{User: w[0], Project: w[1], Roles: strings.Split(w[2], ","), Password: w[3]}
			}
		}
	}
	return k
}

// stopKeystone is StopServices' part for the test Keystone.
func stopKeystone() {
	s := &keystoneState
	if !s.user {
		return
	}
	s.user = false
	serviceUnregister(s.script, s.dir)
}
