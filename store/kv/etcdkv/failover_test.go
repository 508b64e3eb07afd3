package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
)

// Commits in flight while the leader stops (twice) and dies (SIGKILL,
// once): four writers each claim new keys in a loop (Cond: absent), with
// the default 5 s deadline. Every commit succeeds (a blind retry of an
// applied claim would find its own write: ErrConflict), every key is
// there once with the value written and the revision its commit
// returned, and nothing else is (the commit tokens are not listed).
func TestCommitDuringLeaderFailover(t *testing.T) {
	ns := testNS(t)
	var logs lockedBuffer
	b := openNS(t, ns, func(c *Config) {
		c.LeaseTTL = 3 * time.Second
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	eps := testutil.EtcdEndpoints(t)
	raw := rawClient(t, eps)
	type done struct {
		key string
		rev int64
	}
	var (
		mu      sync.Mutex
		commits []done
		worst   time.Duration
		errs    []string
	)
	for round, how := range []string{"stopped", "killed", "stopped"} {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var slowest time.Duration
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					k := fmt.Sprintf("name/r%d-w%d-%05d", round, w, i)
					t0 := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := b.Commit(ctx, &kv.Batch{Conds: []kv.Cond{{Key: k}}, Ops: []kv.Op{put(k, k)}})
					cancel()
					d := time.Since(t0)
					mu.Lock()
					slowest = max(slowest, d)
					if err != nil {
						errs = append(errs, fmt.Sprintf("leader %s: %s: %v after %v", how, k, err, d.Round(time.Millisecond)))
					} else {
						commits = append(commits, done{k, res.Rev})
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		m := leaderMember(t, raw, eps)
		if how == "killed" {
			testutil.EtcdScript(t, "stop-member", fmt.Sprint(m), "--kill")
		} else {
			testutil.EtcdScript(t, "stop-member", fmt.Sprint(m))
		}
		t.Cleanup(func() { testutil.EtcdScript(t, "start-member", fmt.Sprint(m)) })
		time.Sleep(1500 * time.Millisecond)
		close(stop)
		wg.Wait()
		testutil.EtcdScript(t, "start-member", fmt.Sprint(m))
		t.Logf("leader m%d %s: slowest commit %v", m, how, slowest.Round(time.Millisecond))
		worst = max(worst, slowest)
	}
	if len(errs) > 0 {
		t.Fatalf("%d commits failed during the failovers:\n%s", len(errs), strings.Join(errs, "\n"))
	}
	got := map[string]kv.Pair{}
	if _, err := b.Scan(ctx5(t), "", "", 0, func(p kv.Pair) error {
		got[p.Key] = kv.Pair{Key: p.Key, Value: slices.Clone(p.Value), ModRev: p.ModRev}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range commits {
		p, ok := got[c.key]
		if !ok || string(p.Value) != c.key || p.ModRev != c.rev {
			t.Errorf("%s: committed at %d, found %+v", c.key, c.rev, p)
		}
	}
	if len(got) != len(commits) {
		t.Errorf("%d keys listed, %d commits", len(got), len(commits))
	}
	retried := strings.Count(logs.String(), "commit attempt failed")
	if testing.Verbose() {
		t.Log(logs.String())
	}
	t.Logf("%d commits, %d attempts retried, slowest commit %v", len(commits), retried, worst.Round(time.Millisecond))
	if strings.Contains(logs.String(), "unreachable") {
		t.Errorf("a leader failover was logged as an outage:\n%s", logs.String())
	}
}

// The token protocol, attempt by attempt (commit.go): the answer of an
// applied attempt is lost, and its retry reports it applied at its
// revision, once; a retry that meets a real conflict stops a stray first
// attempt from applying later, even once the conflict is gone; a later
// retry that finds only that stop commits afresh; a retry whose lease
// (and so the first attempt's token) is gone is refused whole.
func TestCommitTokenRetries(t *testing.T) {
	ns := testNS(t)
	b := openNS(t, ns, nil)
	raw := rawClient(t, testutil.EtcdEndpoints(t))
	ctx := ctx5(t)
	lease, err := b.currentLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	claim := func(key string) *prepared {
		p, err := b.prepare(&kv.Batch{Conds: []kv.Cond{{Key: key}}, Ops: []kv.Op{put(key, "mine")}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	send := func(p *prepared, l clientv3.LeaseID, n uint64, retry bool) (kv.Result, bool, bool) {
		t.Helper()
		resp, err := b.txn(p, l, n, retry, 0)(ctx).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return b.outcome(p, resp)
	}
	value := func(key string) string {
		r, err := raw.Get(ctx, ns+key)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			return "(absent)"
		}
		return string(r.Kvs[0].Value)
	}

	// 1. Applied, answer lost: the retry finds the token.
	p, n := claim("name/a"), b.toks.begin()
	first, applied, _ := send(p, lease, n, false)
	if !applied {
		t.Fatal("first attempt not applied")
	}
	res, applied, again := send(p, lease, n, true)
	if !applied || again || res.Rev != first.Rev || len(res.Current) != 0 {
		t.Fatalf("retry of an applied claim: %+v applied=%v again=%v, want applied at %d", res, applied, again, first.Rev)
	}
	b.toks.end(n, false)

	// 2. First attempt lost in flight; another host takes the name; the
	// retry reports the conflict. The name is freed, then the stray first
	// attempt arrives: it must not apply.
	p, n = claim("name/b"), b.toks.begin()
	if _, err := raw.Put(ctx, ns+"name/b", "other"); err != nil {
		t.Fatal(err)
	}
	res, applied, again = send(p, lease, n, true)
	if applied || again || len(res.Current) != 1 || string(res.Current[0].Value) != "other" {
		t.Fatalf("retry against a taken name: %+v applied=%v again=%v, want a conflict", res, applied, again)
	}
	if _, err := raw.Delete(ctx, ns+"name/b"); err != nil {
		t.Fatal(err)
	}
	if _, applied, _ := send(p, lease, n, false); applied || value("name/b") != "(absent)" {
		t.Fatalf("a stray first attempt applied after its retry's conflict: name/b = %s", value("name/b"))
	}
	// 3. A further retry finds only the stop, every Cond holding: commit
	// afresh (Commit does it under a new token).
	if _, applied, again = send(p, lease, n, true); applied || !again {
		t.Fatalf("retry that finds only its stop: applied=%v again=%v, want again", applied, again)
	}
	b.toks.end(n, false)

	// 4. The lease that carried the first attempt's token is gone: the
	// retry is refused whole, and nothing is applied twice.
	p, n = claim("name/c"), b.toks.begin()
	l2, err := raw.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, applied, _ := send(p, l2.ID, n, false); !applied {
		t.Fatal("first attempt not applied")
	}
	if _, err := raw.Revoke(ctx, l2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctx, ns+"name/c"); err != nil {
		t.Fatal(err)
	}
	_, err = b.txn(p, l2.ID, n, true, 0)(ctx).Commit()
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) || value("name/c") != "(absent)" {
		t.Fatalf("retry after its lease was revoked: %v, name/c = %s", err, value("name/c"))
	}
	b.toks.end(n, false)

	// Through Commit: settled tokens are deleted by later commits, and
	// never listed.
	for i := range 5 {
		k := fmt.Sprintf("name/d%d", i)
		if _, err := b.Commit(ctx, &kv.Batch{Conds: []kv.Cond{{Key: k}}, Ops: []kv.Op{put(k, "v")}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := raw.Get(ctx, ns+tokenPrefix+b.session+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, k := range r.Kvs {
		left = append(left, strings.TrimPrefix(string(k.Key), ns))
	}
	// The tokens of the attempts made above by hand are deleted too: their
	// numbers are below the last Commit's.
	if len(left) != 1 || !strings.HasSuffix(left[0], "/a") {
		t.Errorf("tokens left after 5 commits: %q, want the last one's", left)
	}
	n = 0
	if _, err := b.Scan(ctx, "", "", 0, func(p kv.Pair) error {
		if isToken(p.Key) {
			t.Errorf("Scan listed a token: %s", p.Key)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// This host's lease is lost while nobody asks anything (etcd down longer
// than the TTL: the keep-alive gives up): the outage is logged once and
// its end once although no request was made, a new lease is granted when
// etcd is back, and the leased key moves to it: once the old lease has
// expired on the server, the key is still there with its value.
func TestLeasedKeysSurviveLeaseLoss(t *testing.T) {
	ep, stop, restart := privateEtcd(t)
	var logs lockedBuffer
	ns := testNS(t)
	b, err := Open(context.Background(), Config{Endpoints: []string{ep}, Namespace: ns, LeaseTTL: 2 * time.Second,
		RequestTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "upload/x", Value: []byte("host-a"), Leased: true}}}); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	old := b.lease
	b.mu.Unlock()
	stop()
	time.Sleep(5 * time.Second) // 2.5 TTLs: the keep-alive gives up
	restart()
	raw := rawClient(t, []string{ep})
	var now clientv3.LeaseID
	for t0 := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		b.mu.Lock()
		now = b.lease
		b.mu.Unlock()
		if now != 0 && now != old && strings.Contains(logs.String(), "keys moved to its new lease") {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("no new lease, or leased keys not moved, 10 s after etcd was back:\n%s", logs.String())
		}
	}
	// The old lease outlives the restart by about its TTL (etcd extends
	// leases at a leader's election); wait for its expiry.
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		ttl, err := raw.TimeToLive(ctx5(t), old)
		if err == nil && ttl.TTL == -1 {
			break
		}
		if time.Since(t0) > 15*time.Second {
			t.Fatalf("the old lease has not expired 15 s after the restart: %+v %v", ttl, err)
		}
	}
	r, err := raw.Get(ctx5(t), ns+"upload/x")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "host-a" || clientv3.LeaseID(r.Kvs[0].Lease) != now {
		t.Fatalf("leased key after its old lease expired: %+v %v, want host-a on lease %x\n%s", r, err, now, logs.String())
	}
	for _, want := range []string{"unreachable", "reachable again", "lease is lost", "keys moved to its new lease"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%d log lines with %q, want 1:\n%s", n, want, logs.String())
		}
	}
}

// The keys moved to a new lease are those this Backend wrote and that
// nobody changed since: one another host rewrote stays as it is (not on
// this host's lease), one deleted is not brought back, one this Backend
// deleted is forgotten.
func TestReattachSkipsChangedKeys(t *testing.T) {
	ns := testNS(t)
	var logs lockedBuffer
	b := openNS(t, ns, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	raw := rawClient(t, testutil.EtcdEndpoints(t))
	for _, k := range []string{"upload/a", "upload/b", "upload/c", "upload/d"} {
		if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: k, Value: []byte("mine"), Leased: true}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Commit(ctx5(t), &kv.Batch{Ops: []kv.Op{{Kind: kv.Delete, Key: "upload/d"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx5(t), ns+"upload/b", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctx5(t), ns+"upload/c"); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	old := b.lease
	b.mu.Unlock()
	b.lost(old, "test")
	now, err := b.currentLease(ctx5(t))
	if err != nil || now == old {
		t.Fatal(now, err)
	}
	for t0 := time.Now(); !strings.Contains(logs.String(), "keys moved to its new lease"); time.Sleep(50 * time.Millisecond) {
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("keys not moved:\n%s", logs.String())
		}
	}
	if _, err := raw.Revoke(ctx5(t), old); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"upload/a": "mine@new", "upload/b": "other@0", "upload/c": "(absent)", "upload/d": "(absent)"} {
		r, err := raw.Get(ctx5(t), ns+k)
		if err != nil {
			t.Fatal(err)
		}
		got := "(absent)"
		if len(r.Kvs) == 1 {
			l := fmt.Sprint(r.Kvs[0].Lease)
			if clientv3.LeaseID(r.Kvs[0].Lease) == now {
				l = "new"
			}
			got = string(r.Kvs[0].Value) + "@" + l
		}
		if got != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
	b.lmu.Lock()
	keys := slices.Sorted(maps.Keys(b.leased))
	b.lmu.Unlock()
	if !slices.Equal(keys, []string{"upload/a"}) {
		t.Errorf("leased keys remembered: %q, want upload/a", keys)
	}
	if !strings.Contains(logs.String(), "moved=1 gone=2") {
		t.Errorf("log: %s", logs.String())
	}
}
