package etcdkv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
)

// These tests run against a real 3-member cluster of scripts/etcd.sh
// (testutil.EtcdEndpoints starts it; TestMain stops it), each in its own
// namespace. The failover tests stop and kill its members, so this
// package has a cluster of its own (etcdkvPortOffset past the test
// cluster's ports, in its own directory): the other packages' test
// processes, which go test runs at the same time on the shared test
// cluster, are not disturbed (a migrate of the integration tests failed
// to get its lease while a leader here was killed). The outage and
// authentication tests start a private one-member etcd besides.

// etcdkvPortOffset moves this package's cluster from the test cluster's
// first client port (IMAGEFS_ETCD_PORT, default 23790) to 23840-23842,
// peers 23850-23852.
const etcdkvPortOffset = 50

func TestMain(m *testing.M) {
	if os.Getenv("ETCDKV_HOLDER") != "" {
		holder()
		return
	}
	os.Setenv("IMAGEFS_ETCD_PORT", strconv.Itoa(testutil.EtcdPort()+etcdkvPortOffset))
	os.Setenv("IMAGEFS_ETCD_DIR", testutil.EtcdDir()+"-etcdkv")
	code := m.Run()
	testutil.StopServices()
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testNS is a namespace of its own for one test.
func testNS(t *testing.T) string {
	return "/imagefs-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + randHex(6) + "/"
}

// rawClient is a plain etcd client for what the tests check behind the
// Backend's back (compaction, lease TTLs, cleanup).
func rawClient(t *testing.T, eps []string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openNS opens a Backend on the test cluster in namespace ns, closed and
// its keys removed at the test's end.
func openNS(t *testing.T, ns string, mod func(*Config)) *Backend {
	t.Helper()
	eps := testutil.EtcdEndpoints(t)
	cfg := Config{Endpoints: eps, Namespace: ns, LeaseTTL: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	if mod != nil {
		mod(&cfg)
	}
	b, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c.Delete(ctx, ns, clientv3.WithPrefix())
			cancel()
			c.Close()
		}
	})
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// lockedBuffer collects log output of several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(k, v string) kv.Op { return kv.Op{Kind: kv.Put, Key: k, Value: []byte(v)} }

// A Scan at one revision reads one state across its pages while other
// clients write: every pair a/i, b/i is written together (one commit), and
// every scan (at the latest revision, paging over a/ then b/) sees the two
// equal; a scan at the first scan's revision sees exactly its result.
func TestScanAtRevisionAcrossPages(t *testing.T) {
	ns := testNS(t)
	b := openNS(t, ns, nil)
	w := openNS(t, ns, nil)
	const n = 1500
	val := func(i, gen int) string { return fmt.Sprintf("%05d-%04d-%s", i, gen, strings.Repeat("x", 2000)) }
	for i := 0; i < n; i += 50 {
		var ops []kv.Op
		for j := i; j < i+50; j++ {
			ops = append(ops, put(fmt.Sprintf("a/%05d", j), val(j, 0)), put(fmt.Sprintf("b/%05d", j), val(j, 0)))
		}
		if _, err := w.Commit(ctx5(t), &kv.Batch{Ops: ops}); err != nil {
			t.Fatal(err)
		}
	}
	type kvp struct{ k, v string }
	scan := func(rev int64) ([]kvp, int64, error) {
		var got []kvp
		r, err := b.Scan(ctx5(t), "", "", rev, func(p kv.Pair) error {
			got = append(got, kvp{p.Key, string(p.Value)})
			return nil
		})
		return got, r, err
	}
	t0 := time.Now()
	first, r0, err := scan(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scan of %d keys of 2 KB: %v (pages of 500, then about 2,000)", len(first), time.Since(t0))
	if len(first) != 2*n {
		t.Fatalf("scan: %d keys, want %d", len(first), 2*n)
	}

	// Writers: each commit rewrites one pair, to a new generation.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes sync.Map
	for wi := 0; wi < 2; wi++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gen := 1; ; gen++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (gen*7919 + wi*13) % n
				ops := []kv.Op{put(fmt.Sprintf("a/%05d", i), val(i, gen)), put(fmt.Sprintf("b/%05d", i), val(i, gen))}
				if _, err := w.Commit(context.Background(), &kv.Batch{Ops: ops}); err != nil {
					t.Error(err)
					return
				}
				writes.Store(wi, gen)
			}
		}()
	}
	for round := 0; round < 5; round++ {
		got, r, err := scan(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2*n {
			t.Fatalf("scan at %d: %d keys, want %d", r, len(got), 2*n)
		}
		for i := 0; i < n; i++ {
			if got[i].v != got[n+i].v {
				t.Fatalf("scan at %d: %s=%.12s but %s=%.12s: pages of different revisions", r, got[i].k, got[i].v, got[n+i].k, got[n+i].v)
			}
		}
		again, r2, err := scan(r0)
		if err != nil {
			t.Fatal(err)
		}
		if r2 != r0 || !slices.Equal(again, first) {
			t.Fatalf("scan at %d (returned %d) differs from the first scan at that revision", r0, r2)
		}
	}
	close(stop)
	wg.Wait()
	g0, _ := writes.Load(0)
	g1, _ := writes.Load(1)
	t.Logf("concurrent commits during the scans: %v + %v", g0, g1)
	if g0 == nil || g1 == nil {
		t.Fatal("the writers committed nothing during the scans")
	}
}

// Two clients race to create one key 200 times: exactly one wins each
// round, the loser's Result.Current holds the winner's value and revision.
// A ModRev Cond on a key changed since fails too.
func TestCommitConflict(t *testing.T) {
	ns := testNS(t)
	c := [2]*Backend{openNS(t, ns, nil), openNS(t, ns, nil)}
	var lat []time.Duration
	var latMu sync.Mutex
	for round := 0; round < 200; round++ {
		key := fmt.Sprintf("name/r%03d", round)
		var res [2]kv.Result
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				t0 := time.Now()
				res[i], errs[i] = c[i].Commit(ctx5(t), &kv.Batch{Conds: []kv.Cond{{Key: key}}, Ops: []kv.Op{put(key, fmt.Sprint(i))}})
				latMu.Lock()
				lat = append(lat, time.Since(t0))
				latMu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for i := range c {
			switch {
			case errs[i] == nil:
				if won >= 0 {
					t.Fatalf("round %d: both won", round)
				}
				won = i
			case !errors.Is(errs[i], kv.ErrConflict):
				t.Fatalf("round %d: client %d: %v", round, i, errs[i])
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody won", round)
		}
		lost := res[1-won]
		if len(lost.Current) != 1 || lost.Current[0].Key != key || string(lost.Current[0].Value) != fmt.Sprint(won) ||
			lost.Current[0].ModRev != res[won].Rev || lost.Current[0].CreateRev != res[won].Rev {
			t.Fatalf("round %d: loser's Current %+v, want %q at revision %d", round, lost.Current, fmt.Sprint(won), res[won].Rev)
		}
		if lost.Rev < res[won].Rev {
			t.Fatalf("round %d: loser's Rev %d < winner's %d", round, lost.Rev, res[won].Rev)
		}
	}
	slices.Sort(lat)
	t.Logf("racing commits: p50 %v, p99 %v over %d", lat[len(lat)/2], lat[len(lat)*99/100], len(lat))

	// Read-modify-write with ModRev.
	p, err := c[0].Get(ctx5(t), "name/r000")
	if err != nil || p.ModRev == 0 {
		t.Fatal(p, err)
	}
	if _, err := c[1].Commit(ctx5(t), &kv.Batch{Conds: []kv.Cond{{Key: p.Key, ModRev: p.ModRev}}, Ops: []kv.Op{put(p.Key, "x")}}); err != nil {
		t.Fatal(err)
	}
	res, err := c[0].Commit(ctx5(t), &kv.Batch{Conds: []kv.Cond{{Key: p.Key, ModRev: p.ModRev}, {Key: "absent"}},
		Ops: []kv.Op{put(p.Key, "y"), {Kind: kv.Delete, Key: "name/r001"}}})
	if !errors.Is(err, kv.ErrConflict) || len(res.Current) != 2 || string(res.Current[0].Value) != "x" || res.Current[1].ModRev != 0 {
		t.Fatalf("stale ModRev: %v, %+v", err, res.Current)
	}
	if q, _ := c[0].Get(ctx5(t), "name/r001"); q.ModRev == 0 {
		t.Fatal("a failed commit deleted a key")
	}
}

// Too many ops, too large a request: kv.ErrTooLarge.
func TestCommitTooLarge(t *testing.T) {
	b := openNS(t, testNS(t), nil)
	var ops []kv.Op
	for i := 0; i < 1100; i++ { // scripts/etcd.sh: --max-txn-ops 1024
		ops = append(ops, put(fmt.Sprintf("k%04d", i), "v"))
	}
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: ops}); !errors.Is(err, kv.ErrTooLarge) {
		t.Fatalf("1100 ops: %v, want ErrTooLarge", err)
	}
	big := bytes.Repeat([]byte("x"), 1600<<10) // over the server's 1.5 MiB
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "big", Value: big}}}); !errors.Is(err, kv.ErrTooLarge) {
		t.Fatalf("1.6 MiB: %v, want ErrTooLarge", err)
	}
	big = bytes.Repeat([]byte("x"), 3<<20) // over the client's 2 MiB
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "big", Value: big}}}); !errors.Is(err, kv.ErrTooLarge) {
		t.Fatalf("3 MiB: %v, want ErrTooLarge", err)
	}
}

// holder is the test binary run as a host that holds a Leased key and
// dies by SIGKILL (TestLeasedKeyVanishesWhenHolderDies).
func holder() {
	f := strings.Split(os.Getenv("ETCDKV_HOLDER"), "|") // endpoints|namespace|key
	b, err := Open(context.Background(), Config{Endpoints: strings.Split(f[0], ","), Namespace: f[1], LeaseTTL: 2 * time.Second})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	if _, err := b.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: f[2], Value: []byte("held"), Leased: true}}}); err != nil {
		fmt.Println("commit:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// A Leased key lives while its holder does (its keep-alive renews a 2 s
// lease), vanishes within the TTL plus slack after the holder's SIGKILL,
// and at once at Close.
func TestLeasedKeyVanishesWhenHolderDies(t *testing.T) {
	ns := testNS(t)
	b := openNS(t, ns, nil)
	eps := testutil.EtcdEndpoints(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ETCDKV_HOLDER="+strings.Join(eps, ",")+"|"+ns+"|upload/x")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("holder: %q", line)
	}
	time.Sleep(5 * time.Second) // 2.5 TTLs: only the keep-alive keeps it
	if p, err := b.Get(ctx5(t), "upload/x"); err != nil || string(p.Value) != "held" {
		t.Fatalf("leased key of a live holder after 5 s: %+v, %v", p, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	t0 := time.Now()
	for {
		p, err := b.Get(ctx5(t), "upload/x")
		if err != nil {
			t.Fatal(err)
		}
		if p.ModRev == 0 {
			break
		}
		if time.Since(t0) > 2*time.Second+4*time.Second {
			t.Fatalf("leased key still there %v after its holder's SIGKILL (TTL 2 s)", time.Since(t0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("leased key vanished %v after the holder's SIGKILL (TTL 2 s)", time.Since(t0).Round(time.Millisecond))

	// Close revokes at once.
	c := openNS(t, ns, nil)
	if _, err := c.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "upload/y", Value: []byte("y"), Leased: true}}}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if p, err := b.Get(ctx5(t), "upload/y"); err != nil || p.ModRev != 0 {
		t.Fatalf("leased key after its holder's Close: %+v, %v", p, err)
	}
}

// A lost lease (here revoked behind the Backend's back, as an expiry after
// a partition would) is replaced: the next Leased put succeeds with a new,
// live lease, and the loss is logged once.
func TestLeaseLostIsRenewed(t *testing.T) {
	ns := testNS(t)
	var logs lockedBuffer
	b := openNS(t, ns, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	raw := rawClient(t, testutil.EtcdEndpoints(t))
	for round := 0; round < 2; round++ {
		b.mu.Lock()
		old := b.lease
		b.mu.Unlock()
		if old == 0 {
			t.Fatal("no lease")
		}
		if _, err := raw.Revoke(ctx5(t), old); err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			time.Sleep(500 * time.Millisecond) // let the keep-alive notice
		}
		key := fmt.Sprint("upload/", round)
		if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: key, Value: []byte("v"), Leased: true}}}); err != nil {
			t.Fatalf("round %d: leased put after the lease was revoked: %v", round, err)
		}
		r, err := raw.Get(ctx5(t), ns+key)
		if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease == 0 || clientv3.LeaseID(r.Kvs[0].Lease) == old {
			t.Fatalf("round %d: %v %v", round, r, err)
		}
		ttl, err := raw.TimeToLive(ctx5(t), clientv3.LeaseID(r.Kvs[0].Lease))
		if err != nil || ttl.TTL <= 0 {
			t.Fatalf("round %d: new lease: %+v %v", round, ttl, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := strings.Count(logs.String(), "lease is lost"); n != 2 {
		t.Fatalf("%d log lines of a lost lease for 2 losses:\n%s", n, logs.String())
	}
}

// A watch from a revision delivers this client's and another client's
// commits in revision order, puts and deletes; after a compaction, a watch
// from a compacted revision (and a Scan at it) reports ErrCompacted and
// the channel closes.
func TestWatch(t *testing.T) {
	ns := testNS(t)
	a := openNS(t, ns, nil)
	o := openNS(t, ns, nil)
	r0, err := a.Scan(ctx5(t), "", "", 0, func(kv.Pair) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.Watch(ctx, "img/", r0+1)
	type want struct {
		typ kv.EventType
		key string
		val string
		rev int64
	}
	var wants []want
	for i := 0; i < 60; i++ {
		c := a
		if i%2 == 1 {
			c = o
		}
		key := fmt.Sprintf("img/%02d", i%10)
		op, w := put(key, fmt.Sprint(i)), want{kv.EventPut, key, fmt.Sprint(i), 0}
		if i%7 == 3 && i >= 10 { // a key put 10 commits ago
			op, w = kv.Op{Kind: kv.Delete, Key: key}, want{kv.EventDelete, key, "", 0}
		}
		// a key outside the prefix, in the same commit: not reported
		res, err := c.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{op, put("other", "x")}})
		if err != nil {
			t.Fatal(err)
		}
		w.rev = res.Rev
		wants = append(wants, w)
	}
	var got []want
	var last int64
	deadline := time.After(10 * time.Second)
	for len(got) < len(wants) {
		select {
		case wb, ok := <-ch:
			if !ok || wb.Err != nil {
				t.Fatalf("watch ended: %v %v", ok, wb.Err)
			}
			for _, ev := range wb.Events {
				got = append(got, want{ev.Type, ev.Pair.Key, string(ev.Pair.Value), ev.Pair.ModRev})
			}
			if wb.Rev < last || wb.Rev != got[len(got)-1].rev {
				t.Fatalf("batch Rev %d after %d, last event at %d", wb.Rev, last, got[len(got)-1].rev)
			}
			last = wb.Rev
		case <-deadline:
			t.Fatalf("watch: %d of %d events after 10 s", len(got), len(wants))
		}
	}
	if !slices.Equal(got, wants) {
		t.Fatalf("watch events\n got %v\nwant %v", got, wants)
	}

	// Compaction up to now: a watch from r0+1 can no longer be served.
	raw := rawClient(t, testutil.EtcdEndpoints(t))
	if _, err := raw.Compact(ctx5(t), last); err != nil && !strings.Contains(err.Error(), "compacted") {
		t.Fatal(err)
	}
	ch2 := a.Watch(ctx, "img/", r0+1)
	select {
	case wb, ok := <-ch2:
		if !ok || !errors.Is(wb.Err, kv.ErrCompacted) {
			t.Fatalf("watch from a compacted revision: %v %+v", ok, wb)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch from a compacted revision: nothing after 10 s")
	}
	select {
	case _, ok := <-ch2:
		if ok {
			t.Fatal("watch went on after ErrCompacted")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch not closed after ErrCompacted")
	}
	if _, err := a.Scan(ctx5(t), "", "", r0, func(kv.Pair) error { return nil }); !errors.Is(err, kv.ErrCompacted) {
		t.Fatalf("scan at a compacted revision: %v", err)
	}
	// The first watch is still live and sees what follows.
	res, err := o.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{put("img/after", "z")}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case wb := <-ch:
		if wb.Err != nil || len(wb.Events) != 1 || wb.Events[0].Pair.Key != "img/after" || wb.Rev != res.Rev {
			t.Fatalf("after the compaction: %+v", wb)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("live watch: nothing after the compaction")
	}
	cancel()
	for range ch {
	}
}

// leaderMember returns the number (1-3) of the cluster's leader.
func leaderMember(t *testing.T, raw *clientv3.Client, eps []string) int {
	t.Helper()
	for i, ep := range eps {
		st, err := raw.Status(ctx5(t), ep)
		if err == nil && st.Leader == st.Header.MemberId {
			return i + 1
		}
	}
	t.Fatal("no leader")
	return 0
}

// One member of three stopped (the leader killed, so that the others
// elect a new one; the leader stopped, which hands its leadership over
// first; a follower): every commit, scan and watch goes on, each within
// its 5 s deadline.
func TestOneMemberDown(t *testing.T) {
	ns := testNS(t)
	var logs lockedBuffer
	b := openNS(t, ns, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	eps := testutil.EtcdEndpoints(t)
	raw := rawClient(t, eps)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r0, err := b.Scan(ctx5(t), "", "", 0, func(kv.Pair) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ch := b.Watch(ctx, "", r0+1)
	n := 0
	commit := func(what string) {
		t.Helper()
		t0 := time.Now()
		k := fmt.Sprintf("k%03d", n)
		if _, err := b.Commit(ctx5(t), &kv.Batch{Conds: []kv.Cond{{Key: k}}, Ops: []kv.Op{put(k, "v")}}); err != nil {
			t.Fatalf("%s: commit %d: %v (after %v)", what, n, err, time.Since(t0))
		}
		n++
	}
	for i := 0; i < 5; i++ {
		commit("all up")
	}
	for _, which := range []string{"leader killed", "leader", "follower"} {
		m := leaderMember(t, raw, eps)
		if which == "follower" {
			m = m%3 + 1
		}
		if which == "leader killed" {
			testutil.EtcdScript(t, "stop-member", fmt.Sprint(m), "--kill")
		} else {
			testutil.EtcdScript(t, "stop-member", fmt.Sprint(m))
		}
		t.Cleanup(func() { testutil.EtcdScript(t, "start-member", fmt.Sprint(m)) })
		t0 := time.Now()
		for i := 0; i < 20; i++ {
			commit(fmt.Sprintf("%s m%d stopped", which, m))
		}
		t.Logf("%s m%d stopped: 20 commits in %v", which, m, time.Since(t0))
		cnt := 0
		if _, err := b.Scan(ctx5(t), "", "", 0, func(kv.Pair) error { cnt++; return nil }); err != nil || cnt != n {
			t.Fatalf("scan with m%d stopped: %d keys, %v", m, cnt, err)
		}
		testutil.EtcdScript(t, "start-member", fmt.Sprint(m))
	}
	seen := 0
	for seen < n {
		select {
		case wb := <-ch:
			if wb.Err != nil {
				t.Fatal(wb.Err)
			}
			seen += len(wb.Events)
		case <-time.After(10 * time.Second):
			t.Fatalf("watch: %d of %d events", seen, n)
		}
	}
	if strings.Contains(logs.String(), "unreachable") {
		t.Fatalf("one member down was logged as an outage:\n%s", logs.String())
	}
}

// privateEtcd starts a one-member etcd of this test's own (ports 23797 and
// 23807), for outages and authentication without disturbing the shared
// cluster. It returns its endpoint and a function that stops it (and is
// called at the test's end); restart starts it again on the same data.
func privateEtcd(t *testing.T) (ep string, stop, restart func()) {
	testutil.EtcdEndpoints(t) // etcd installed
	dir := t.TempDir()
	ep = "127.0.0.1:23797"
	var cmd *exec.Cmd
	stop = func() {
		if cmd != nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			cmd = nil
		}
	}
	restart = func() {
		log, err := os.OpenFile(filepath.Join(dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		cmd = exec.Command("etcd", "--name", "p", "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://"+ep, "--advertise-client-urls", "http://"+ep,
			"--listen-peer-urls", "http://127.0.0.1:23807", "--initial-advertise-peer-urls", "http://127.0.0.1:23807",
			"--initial-cluster", "p=http://127.0.0.1:23807", "--logger", "zap", "--log-outputs", "stderr")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if exec.Command("etcdctl", "--endpoints="+ep, "--dial-timeout=1s", "endpoint", "health").Run() == nil {
				return
			}
			if i > 150 {
				out, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
				t.Fatalf("private etcd not healthy:\n%s", out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	restart()
	t.Cleanup(stop)
	return ep, stop, restart
}

// With every member down, calls return kv.ErrUnavailable within their
// deadline (the ctx's, or RequestTimeout), the outage is logged once and
// its end once, and commits work again when etcd is back.
func TestAllDownUnavailable(t *testing.T) {
	ep, stop, restart := privateEtcd(t)
	var logs lockedBuffer
	b, err := Open(context.Background(), Config{Endpoints: []string{ep}, Namespace: testNS(t), RequestTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.Watch(ctx, "", 1)
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{put("a", "1")}}); err != nil {
		t.Fatal(err)
	}
	stop()
	check := func(what string, limit time.Duration, f func() error) {
		t.Helper()
		t0 := time.Now()
		err := f()
		if d := time.Since(t0); !errors.Is(err, kv.ErrUnavailable) || d > limit {
			t.Fatalf("%s with etcd down: %v after %v, want ErrUnavailable within %v", what, err, d, limit)
		}
	}
	for i := 0; i < 3; i++ {
		check("commit (ctx 2 s)", 3*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := b.Commit(ctx, &kv.Batch{Ops: []kv.Op{put("b", "1")}})
			return err
		})
		check("commit (RequestTimeout 1 s)", 2*time.Second, func() error {
			_, err := b.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{put("b", "1"), {Kind: kv.Put, Key: "u", Leased: true}}})
			return err
		})
		check("get", 2*time.Second, func() error { _, err := b.Get(context.Background(), "a"); return err })
		check("scan", 2*time.Second, func() error {
			_, err := b.Scan(context.Background(), "", "", 0, func(kv.Pair) error { return nil })
			return err
		})
	}
	check("open", 3*time.Second, func() error {
		_, err := Open(context.Background(), Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second})
		return err
	})
	if n := strings.Count(logs.String(), "unreachable"); n != 1 {
		t.Fatalf("%d log lines of the outage, want 1:\n%s", n, logs.String())
	}
	restart()
	var res kv.Result
	for i := 0; ; i++ {
		if res, err = b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{put("c", "1")}}); err == nil {
			break
		}
		if i > 10 {
			t.Fatalf("commit after etcd is back: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "reachable again"); n != 1 {
		t.Fatalf("%d log lines of the outage's end, want 1:\n%s", n, logs.String())
	}
	// The watch waited through the outage and resumes.
	for {
		select {
		case wb := <-ch:
			if wb.Err != nil {
				t.Fatal(wb.Err)
			}
			if wb.Rev >= res.Rev {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not resume after the outage")
		}
	}
}

// A wrong password fails Open with an error, and a log, that do not
// contain it; the right one works.
func TestWrongPassword(t *testing.T) {
	ep, _, _ := privateEtcd(t)
	secret := "s3cret-" + randHex(8)
	for _, args := range [][]string{
		{"user", "add", "root:" + secret, "--interactive=false"},
		{"auth", "enable"},
	} {
		if out, err := exec.Command("etcdctl", append([]string{"--endpoints=" + ep}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("etcdctl %v: %v\n%s", args, err, out)
		}
	}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	wrong := "wrong-" + secret
	_, err := Open(context.Background(), Config{Endpoints: []string{ep}, Username: "root", Password: wrong, Logger: log})
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	t.Logf("wrong password: %v", err)
	if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
		t.Fatalf("the password is in the error or the log: %v\n%s", err, logs.String())
	}
	b, err := Open(context.Background(), Config{Endpoints: []string{ep}, Username: "root", Password: secret, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "k", Value: []byte("v"), Leased: true}}}); err != nil {
		t.Fatal(err)
	}
	if p, err := b.Get(ctx5(t), "k"); err != nil || string(p.Value) != "v" {
		t.Fatal(p, err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("the password is in the log:\n%s", logs.String())
	}
}

// A DeleteRange over the whole namespace (or any range holding the commit
// tokens' tx/) commits: etcd refuses a range delete that overlaps a put of
// the same transaction, and every commit puts its token. The keys in the
// range go, on either side of tx/; keys outside it stay.
func TestDeleteRangeOverTokens(t *testing.T) {
	ns := testNS(t)
	b := openNS(t, ns, nil)
	for _, k := range []string{"a/1", "img/x", "ty/1", "z/1"} {
		if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{put(k, "v")}}); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	keys := func() []string {
		var out []string
		if _, err := b.Scan(ctx5(t), "", "", 0, func(p kv.Pair) error { out = append(out, p.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// [img/, z/): img/x and ty/1 go (tx/ lies between them), z/1 stays.
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.DeleteRange, Key: "img/", End: "z/"}}}); err != nil {
		t.Fatalf("delete range [img/, z/): %v", err)
	}
	if got := keys(); !slices.Equal(got, []string{"a/1", "z/1"}) {
		t.Errorf("after deleting [img/, z/): %q, want [a/1 z/1]", got)
	}
	// The whole namespace.
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.DeleteRange}}}); err != nil {
		t.Fatalf("delete the namespace: %v", err)
	}
	if got := keys(); len(got) != 0 {
		t.Errorf("after deleting the namespace: %q, want none", got)
	}
	for _, c := range []struct{ lo, hi string }{{"a", "b"}, {"a", ""}, {"tx/", "tx0"}, {"u", ""}, {"", "tx/"}, {"tx/a", "u"}} {
		got := outsideTokens(c.lo, c.hi)
		for _, r := range got {
			if (r[1] == "" || r[1] > tokenPrefix) && r[0] < tokenEnd {
				t.Errorf("outsideTokens(%q, %q) = %q: overlaps the tokens", c.lo, c.hi, got)
			}
		}
	}
}
