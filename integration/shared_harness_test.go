package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// The harness of the shared-catalog tests (issue 15): several imagefs
// daemons on this machine stand in for hypervisor hosts. Each has its own
// STORE (staging) and mountpoint, all share one --data directory (sealed
// data, as an NFS export would be) and one etcd namespace, fresh for each
// test, in the 3-member etcd cluster of scripts/etcd.sh.

// sharedLeaseTTL is the etcd lease of an upload in the tests' config
// (lease_ttl): a host that dies mid-upload has its image killed on the
// others within this plus a few seconds.
const sharedLeaseTTL = 3 * time.Second

// hostID returns the --host-id of the i-th host of a shared cluster:
// host-a, host-b, host-c, ...
func hostID(i int) string { return "host-" + string(rune('a'+i)) }

// privateEtcd is the cluster of a fault test (usePrivateEtcd), which stops
// members or the whole cluster; nil otherwise. The other tests use the
// shared test cluster of testutil.EtcdEndpoints, which test processes of
// other packages may be using at the same moment.
var privateEtcd *privateCluster

type privateCluster struct {
	endpoints []string
	env       []string // IMAGEFS_ETCD_PORT and IMAGEFS_ETCD_DIR for scripts/etcd.sh
}

// privateEtcdPort is the first client port of a fault test's private
// cluster (the shared one is on 23790-23792, etcdkv's private member on
// 23797).
// With IMAGEFS_ETCD_PORT set (several test runs on one machine), it is
// that port + 20 (scripts/etcd.sh's peers take PORT+10..PORT+12).
var privateEtcdPort = func() int {
	if os.Getenv("IMAGEFS_ETCD_PORT") != "" {
		return testutil.EtcdPort() + 20
	}
	return 24790
}()

// etcdEndpoints returns the client endpoints (host:port) of the cluster
// the test uses: the private one of a fault test, or the shared test
// cluster (started once per process, stopped by testutil.StopServices in
// TestMain; never skipped with CI=true).
func etcdEndpoints(t testing.TB) []string {
	t.Helper()
	if privateEtcd != nil {
		return privateEtcd.endpoints
	}
	return testutil.EtcdEndpoints(t)
}

// usePrivateEtcd starts a 3-member cluster of this test's own
// (scripts/etcd.sh on privateEtcdPort, data in a temporary directory):
// the shared clusters and the hosts the test starts afterwards use it. It
// is stopped and wiped after the test, after the hosts (cleanups run last
// first).
func usePrivateEtcd(t testing.TB) {
	t.Helper()
	testutil.EtcdEndpoints(t) // installs etcd if missing; fails or skips as the shared tests do
	dir := t.TempDir()
	pc := &privateCluster{env: []string{
		"IMAGEFS_ETCD_PORT=" + strconv.Itoa(privateEtcdPort),
		"IMAGEFS_ETCD_DIR=" + filepath.Join(dir, "etcd"),
	}}
	for i := range 3 {
		pc.endpoints = append(pc.endpoints, "127.0.0.1:"+strconv.Itoa(privateEtcdPort+i))
	}
	privateEtcd = pc
	t.Cleanup(func() {
		if r := pc.script("stop", "--wipe"); r.err != nil {
			t.Errorf("etcd.sh stop of the private cluster: %s", r)
		}
		privateEtcd = nil
	})
	if r := pc.script("start"); r.err != nil {
		t.Fatalf("etcd.sh start of a private cluster: %s", r)
	}
}

// script runs scripts/etcd.sh with args on the private cluster.
func (pc *privateCluster) script(args ...string) result {
	cmd := exec.Command(etcdScriptPath(), args...)
	cmd.Env = append(os.Environ(), pc.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code, err: err}
}

// etcdScriptPath is scripts/etcd.sh of the module (go test runs in
// integration/, the module root is its parent).
func etcdScriptPath() string {
	root, err := filepath.Abs("..")
	if err != nil {
		return filepath.Join("..", "scripts", "etcd.sh")
	}
	return filepath.Join(root, "scripts", "etcd.sh")
}

// etcdMember runs scripts/etcd.sh ARGS (stop-member N, start-member N,
// start, stop) on the test's private cluster (usePrivateEtcd first); it
// must succeed.
func etcdMember(t testing.TB, args ...string) {
	t.Helper()
	if privateEtcd == nil {
		t.Fatal("etcdMember: a fault test stops members of its own cluster only (usePrivateEtcd)")
	}
	start := time.Now()
	if r := privateEtcd.script(args...); r.err != nil {
		t.Fatalf("etcd.sh %s: %s", strings.Join(args, " "), r)
	}
	t.Logf("etcd.sh %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

// etcdLeader returns the member number (1-3, the endpoint's position in
// etcdEndpoints) of the current leader, from etcdctl endpoint status; 1
// when etcdctl cannot tell.
func etcdLeader(t testing.TB) int {
	t.Helper()
	eps := etcdEndpoints(t)
	cmd := exec.Command("etcdctl", "--endpoints="+strings.Join(eps, ","), "--dial-timeout=2s",
		"--command-timeout=5s", "endpoint", "status", "--write-out=json")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.Output()
	if err != nil {
		t.Logf("etcdctl endpoint status: %v; taking member 1", err)
		return 1
	}
	var st []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		}
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Logf("etcdctl endpoint status: %v in %s; taking member 1", err, out)
		return 1
	}
	for _, s := range st {
		if s.Status.Leader != 0 && s.Status.Header.MemberID == s.Status.Leader {
			if i := slices.Index(eps, s.Endpoint); i >= 0 {
				return i + 1
			}
		}
	}
	t.Logf("etcdctl endpoint status names no leader among %v: %s; taking member 1", eps, out)
	return 1
}

// randHex returns n random bytes in hex.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sharedEnv is what the hosts of one shared cluster share.
type sharedEnv struct {
	Endpoints []string
	Namespace string // the etcd key prefix of this test's catalog
	Config    string // the config file (mode 0600) every host reads
	Data      string // the shared --data directory
}

// sharedCluster starts n imagefs daemons, the hosts host-a, host-b, ...,
// on one fresh shared catalog: each with its own STORE and mountpoint
// (fsMount, cleaned up like mount's), all with
//
//	--catalog etcd://EP,EP,EP --data DATA --host-id host-X --config FILE
//
// where FILE (t.TempDir(), 0600) holds
//
//	[etcd]
//	namespace = /imagefs-test-<random>/
//	lease_ttl = 3s
func sharedCluster(t testing.TB, n int) []*fsMount {
	t.Helper()
	hosts, _ := sharedClusterArgs(t, n)
	return hosts
}

// sharedClusterArgs is sharedCluster with more arguments of imagefs mount
// for every host (such as --allow-other); it also returns the shared
// environment.
func sharedClusterArgs(t testing.TB, n int, extra ...string) ([]*fsMount, sharedEnv) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	requireTools(t, "umount")
	env := sharedEnv{Endpoints: etcdEndpoints(t), Namespace: "/imagefs-test-" + randHex(8) + "/"}
	dir := t.TempDir()
	env.Data = filepath.Join(dir, "data")
	if err := os.Mkdir(env.Data, 0o700); err != nil {
		t.Fatal(err)
	}
	env.Config = filepath.Join(dir, "imagefs.conf")
	conf := fmt.Sprintf("[etcd]\nnamespace = %s\nlease_ttl = %s\n", env.Namespace, sharedLeaseTTL)
	if err := os.WriteFile(env.Config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(env.Config, 0o600); err != nil { // whatever the umask
		t.Fatal(err)
	}
	// Runs after every host's cleanup (cleanups run last first): this
	// test's keys leave the cluster.
	t.Cleanup(func() { etcdDeletePrefix(t, env) })
	catalog := "etcd://" + strings.Join(env.Endpoints, ",")
	t.Logf("shared catalog %s namespace %s, data %s", catalog, env.Namespace, env.Data)
	var hosts []*fsMount
	for i := range n {
		host := hostID(i)
		hd := filepath.Join(dir, host)
		m := &fsMount{
			t:     t,
			Store: filepath.Join(hd, "store"),
			Mnt:   filepath.Join(hd, "mnt"),
			log:   filepath.Join(hd, "imagefs.log"),
			Args: append([]string{"--catalog", catalog, "--data", env.Data,
				"--host-id", host, "--config", env.Config}, extra...),
		}
		if err := os.MkdirAll(m.Mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		// As mount's cleanup.
		t.Cleanup(func() {
			m.stop()
			if data, _ := os.ReadFile(m.log); bytes.Contains(data, []byte("WARNING: DATA RACE")) {
				t.Errorf("%s: the daemon reported a data race", host)
			}
			if t.Failed() {
				data, _ := os.ReadFile(m.log)
				t.Logf("%s: imagefs daemon log (%s):\n%s", host, m.log, data)
			}
		})
		m.start()
		hosts = append(hosts, m)
	}
	return hosts, env
}

// etcdDeletePrefix removes the test's namespace from the cluster with
// etcdctl, if it is installed (best effort: a namespace left behind
// harms nobody, each test has its own).
func etcdDeletePrefix(t testing.TB, env sharedEnv) {
	if _, err := exec.LookPath("etcdctl"); err != nil {
		return
	}
	cmd := exec.Command("etcdctl", "--endpoints="+strings.Join(env.Endpoints, ","), "--dial-timeout=2s",
		"--command-timeout=5s", "del", "--prefix", env.Namespace)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("etcdctl del --prefix %s: %v: %s", env.Namespace, err, out)
	}
}

// eventually polls cond (every 2 ms) until it holds and returns how long
// that took, which it logs; it fails the test when cond does not hold
// within deadline. Call it right after the change whose arrival cond
// checks: the delay is measured from the call.
func eventually(t testing.TB, deadline time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if d := time.Since(start); d > deadline {
			t.Fatalf("%s: not within %v", what, deadline)
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	t.Logf("%s: after %v", what, d.Round(100*time.Microsecond))
	return d
}

// lsHas reports whether ls(1) of dir lists every one of names.
func lsHas(dir string, names ...string) bool {
	r := execCmd("ls", "-1", dir)
	if r.err != nil {
		return false
	}
	got := strings.Fields(r.stdout)
	for _, n := range names {
		if !slices.Contains(got, n) {
			return false
		}
	}
	return true
}

// lsLacks reports whether ls(1) of dir succeeds and lists none of names.
func lsLacks(dir string, names ...string) bool {
	r := execCmd("ls", "-1", dir)
	if r.err != nil {
		return false
	}
	got := strings.Fields(r.stdout)
	for _, n := range names {
		if slices.Contains(got, n) {
			return false
		}
	}
	return true
}

// lsSorted returns ls -1 of dir (ls sorts), which must succeed.
func lsSorted(t testing.TB, dir string) []string {
	t.Helper()
	return strings.Fields(run(t, "ls", "-1", dir))
}

// timedOp is what one helper operation did in a child process that was
// killed if it did not finish in time.
type timedOp struct {
	Res  testutil.SysResult
	Took time.Duration
	Hung bool // killed after the limit
}

func (o timedOp) String() string {
	if o.Hung {
		return fmt.Sprintf("hung (killed after %v)", o.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s after %v", o.Res, o.Took.Round(time.Millisecond))
}

// opTimed runs one operation of the test binary's syscall helper
// (testutil's SysHelperEnv: OP PATH ARGS, such as "write PATH VALUE" or
// "mkdir PATH") as root in a child process, which it SIGKILLs after limit
// (a FUSE request that waits is killable), and reports the errno and the
// time it took. Nothing a daemon does can hang the test. Safe to call
// from several goroutines.
func opTimed(limit time.Duration, op, path string, args ...string) timedOp {
	self, err := os.Executable()
	if err != nil {
		return timedOp{Res: testutil.SysResult{Code: -1, Err: err}}
	}
	cmd := exec.Command(self, append([]string{op, path}, args...)...)
	cmd.Env = append(os.Environ(), testutil.SysHelperEnv+"=1")
	cmd.Dir = os.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return timedOp{Res: testutil.SysResult{Code: -1, Err: err}}
	}
	var mu sync.Mutex
	hung := false
	timer := time.AfterFunc(limit, func() {
		mu.Lock()
		hung = true
		mu.Unlock()
		cmd.Process.Kill()
	})
	err = cmd.Wait()
	took := time.Since(start)
	timer.Stop()
	mu.Lock()
	defer mu.Unlock()
	res := testutil.SysResult{Out: out.String(), Stderr: errb.String(), Err: err}
	if ee, ok := err.(*exec.ExitError); ok {
		res.Code = ee.ExitCode()
	} else if err != nil {
		res.Code = -1
	}
	if res.Code == 1 {
		if f := strings.Fields(res.Stderr); len(f) >= 2 {
			res.Errno, res.Step = testutil.ErrnoByName(f[0]), f[1]
		}
	}
	return timedOp{Res: res, Took: took, Hung: hung}
}

// toolTimed runs a tool (SIGKILLed after limit, with timeout(1)) and
// returns what it did.
func toolTimed(limit time.Duration, name string, args ...string) result {
	secs := strconv.FormatFloat(limit.Seconds(), 'f', 1, 64)
	return execCmd("timeout", append([]string{"-s", "KILL", secs, name}, args...)...)
}

// singleHostOnShared returns, when IMAGEFS_TEST_CATALOG=etcd, the
// arguments that run a test's single mount on a shared catalog of its own
// (a fresh namespace of the test cluster, host id host-a, sealed data in
// STORE/data as on a single host, so the tests that look at data files
// find them); nil otherwise. `.ci/run` runs the integration suite a
// second time so.
func singleHostOnShared(t testing.TB, dir, store string) []string {
	t.Helper()
	switch os.Getenv("IMAGEFS_TEST_CATALOG") {
	case "", "pebble":
		return nil
	case "etcd":
	default:
		t.Fatalf("IMAGEFS_TEST_CATALOG=%q: want etcd or pebble", os.Getenv("IMAGEFS_TEST_CATALOG"))
	}
	env := sharedEnv{Endpoints: etcdEndpoints(t), Namespace: "/imagefs-test-" + randHex(8) + "/",
		Config: filepath.Join(dir, "imagefs.conf"), Data: filepath.Join(store, "data")}
	conf := fmt.Sprintf("[etcd]\nnamespace = %s\nlease_ttl = %s\n", env.Namespace, sharedLeaseTTL)
	if err := os.WriteFile(env.Config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(env.Config, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(env.Data, 0o700); err != nil { // --data must exist
		t.Fatal(err)
	}
	t.Cleanup(func() { etcdDeletePrefix(t, env) })
	return []string{"--catalog", "etcd://" + strings.Join(env.Endpoints, ","), "--data", env.Data,
		"--host-id", hostID(0), "--config", env.Config}
}

// storeCatalogArgs holds, for each STORE a test mounted on a shared
// catalog (IMAGEFS_TEST_CATALOG=etcd), the arguments that name that
// catalog, so that the tests' `imagefs fsck STORE` checks it too.
var storeCatalogArgs sync.Map // string -> []string

// fsckCmd returns the arguments of `imagefs fsck ARGS` (ARGS ending with
// STORE), with the catalog arguments of STORE's mount when it was on a
// shared catalog.
func fsckCmd(args ...string) []string {
	out := []string{"fsck"}
	if len(args) > 0 {
		if v, ok := storeCatalogArgs.Load(args[len(args)-1]); ok {
			out = append(out, v.([]string)...)
		}
	}
	return append(out, args...)
}

// embeddedCatalogOnly skips a single-host test in its shared-catalog
// variant (IMAGEFS_TEST_CATALOG=etcd) when what it checks is the embedded
// catalog's own (files in STORE/catalog, the free space of STORE's disk
// for catalog commits, the delete reserve); why says so. README lists
// these tests.
func embeddedCatalogOnly(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("IMAGEFS_TEST_CATALOG") == "etcd" {
		t.Skipf("not applicable to a shared catalog: %s", why)
	}
}
