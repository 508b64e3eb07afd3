package etcdkv

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/imagefs/imagefs/store/kv"
)

// Health: whether the cluster answers now (Probe), and whether the
// cluster answering is still the catalog this Backend opened.
//
// A cluster wiped and started again, recreated, or restored from a
// backup under a mounted host answers at the same endpoints, but its
// history is not the one the host's view follows: its keys' revisions
// restart (a commit's conditions on the host's revisions then never
// hold), the host's lease and upload keys are gone. Every response
// header is checked against the cluster as opened: another cluster id
// (scripts/etcd.sh gives each new cluster another), or, in the answer
// of a linearizable request (a read, a transaction, a lease grant), a
// revision below the highest such answer received before the request
// was sent (a cluster recreated with the same id). Either makes the Backend replaced: it
// logs one error naming the problem, and every call fails at once with
// kv.ErrReplaced (no request, no retry, no lease renewal) until the
// catalog is opened again (a remount).

// probeFresh: an answer of the cluster at most this old stands for one
// now (Probe sends no request).
const probeFresh = time.Second

// probeKey is the key Probe reads (count only): any key would do.
const probeKey = "meta/probe"

// Probe reports whether the cluster answers now: nil when an answer
// (a request's, or the lease's keep-alive's) arrived within probeFresh
// and the client's connection is up, else the answer to one linearizable
// read of one key (count only), within ctx's deadline or RequestTimeout,
// or within downTimeout while etcd is known unreachable. Errors:
// kv.ErrUnavailable, kv.ErrReplaced.
func (b *Backend) Probe(ctx context.Context) error {
	if err := b.replacedErr(); err != nil {
		return err
	}
	if !b.down.Load() && b.connected() && time.Since(time.Unix(0, b.lastOK.Load())) < probeFresh {
		return nil
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	floor := b.floor()
	resp, err := b.cli.Get(rctx, b.ns+probeKey, clientv3.WithCountOnly())
	err = mapErr(err)
	b.note(err)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	b.noteHeader(resp.Header, floor)
	return b.replacedErr()
}

var _ kv.Prober = (*Backend)(nil)

// connected reports whether the client has a connection up to a member
// (gRPC's Ready): all members stopped shows at once, while a member
// without quorum still accepts connections.
func (b *Backend) connected() bool {
	return b.cli.ActiveConnection().GetState() == connectivity.Ready
}

// noteAnswer records that the cluster answered (Probe's freshness).
func (b *Backend) noteAnswer() { b.lastOK.Store(time.Now().UnixNano()) }

// floor returns the highest revision a linearizable answer reported so
// far: a linearizable request sent now is answered at this revision or
// a later one (answers of requests in flight at once may come in any
// order, so each request takes its floor before it is sent).
func (b *Backend) floor() int64 { return b.maxRev.Load() }

// noteHeader checks a response's header against the cluster as opened:
// its cluster id, and, for the answer of a linearizable request sent
// when floor (> 0) was the highest revision seen, a revision not below
// floor; 0 for any other answer (a watch's, a keep-alive's, a Status). A
// mismatch makes the Backend replaced (logged once).
func (b *Backend) noteHeader(h *etcdserverpb.ResponseHeader, floor int64) {
	if h == nil {
		return
	}
	if b.cluster != 0 && h.ClusterId != 0 && h.ClusterId != b.cluster {
		b.replaced(fmt.Sprintf("the etcd cluster's id is %016x, and was %016x at mount "+
			"(the cluster was wiped and started again, or recreated)", h.ClusterId, b.cluster))
		return
	}
	if floor <= 0 || h.Revision <= 0 {
		return
	}
	if h.Revision < floor {
		b.replaced(fmt.Sprintf("the etcd cluster's revision went back from %d to %d "+
			"(the cluster was wiped and recreated with the same id, or restored from a backup)", floor, h.Revision))
		return
	}
	for {
		cur := b.maxRev.Load()
		if h.Revision <= cur || b.maxRev.CompareAndSwap(cur, h.Revision) {
			return
		}
	}
}

// replaced marks the Backend replaced (see Health) and logs it, once;
// the lease is forgotten (not renewed, not revoked: the cluster
// answering has no lease of this host's).
func (b *Backend) replaced(why string) {
	err := fmt.Errorf("%w: the catalog at %s is not the one this host mounted: %s; "+
		"changes are refused (EIO) until imagefs is mounted again (sealed images stay readable)", kv.ErrReplaced, b.url, why)
	if !b.gone.CompareAndSwap(nil, &err) {
		return
	}
	b.mu.Lock()
	b.lease = 0
	b.mu.Unlock()
	b.log.Error(err.Error())
	b.wcancel() // every Watch ends
}

// Replaced returns the error of a replaced Backend (kv.ErrReplaced), or
// nil; it sends no request.
func (b *Backend) Replaced() error { return b.replacedErr() }

// replacedErr returns the error of a replaced Backend, or nil.
func (b *Backend) replacedErr() error {
	if p := b.gone.Load(); p != nil {
		return *p
	}
	return nil
}

// catalogURL names the catalog for messages: etcd://HOST:PORT,... (or
// etcd+tls://) from the endpoints, without credentials (endpoints carry
// none).
func catalogURL(eps []string, tls bool) string {
	hosts := make([]string, len(eps))
	for i, ep := range eps {
		if strings.HasPrefix(ep, "https://") {
			tls = true
		}
		ep = strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
		hosts[i] = ep
	}
	scheme := "etcd://"
	if tls {
		scheme = "etcd+tls://"
	}
	return scheme + strings.Join(hosts, ",")
}
