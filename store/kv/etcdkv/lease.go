package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/store/kv"
)

// This host's lease. Leased puts, and every commit's token, are bound to
// one etcd lease of the Backend, granted at Open and kept alive by the
// client. The lease is lost when its keep-alive ends (the client heard no
// answer within its TTL: a partition, an outage; or it was revoked) or a
// write finds it expired. The Backend then grants a new one in the
// background, retrying every renewPause until the cluster answers (each
// failed grant counts as a request for the outage's log line, so an
// outage longer than the TTL is logged even when nothing else asks), and
// moves the Leased keys it wrote to the new lease: each key is put again
// (same value) with the new lease, if its ModRevision is still the one
// this Backend last wrote. A key that another host changed or removed
// meanwhile, or that etcd already deleted with the old lease, is not
// brought back. So after a partition shorter than the old lease's
// remaining life on the servers (etcd extends every lease by its TTL when
// a new leader takes over), this host's uploads in progress keep their
// upload/<id> keys; their ModRevision changes, as every host's watch
// sees.

// renewPause is the pause between the attempts to grant a new lease
// after one was lost.
const renewPause = time.Second

// leasedKey is a Leased put of this Backend: the revision it wrote the
// key at, and the lease.
type leasedKey struct {
	rev   int64
	lease clientv3.LeaseID
}

// grant takes a new lease and keeps it alive in the background; a lease
// granted after a lost one gets this Backend's Leased keys (reattach).
// Must hold granting.
func (b *Backend) grant(ctx context.Context) (clientv3.LeaseID, error) {
	if err := b.replacedErr(); err != nil {
		return 0, err
	}
	floor := b.floor()
	resp, err := b.cli.Grant(ctx, b.ttl)
	err = mapErr(err)
	b.note(err)
	if err != nil {
		return 0, err
	}
	b.noteTerm(resp.ResponseHeader)
	if b.noteHeader(resp.ResponseHeader, floor); b.replacedErr() != nil {
		return 0, b.replacedErr() // a lease of another catalog: left to expire
	}
	id := resp.ID
	ch, err := b.cli.KeepAlive(b.ctx, id)
	if err != nil {
		return 0, mapErr(err)
	}
	b.mu.Lock()
	b.lease = id
	again := b.granted
	b.granted = true
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for ka := range ch {
			b.noteAnswer()
			b.noteHeader(ka.ResponseHeader, 0)
		}
		// The client closes the channel when the lease expired (no
		// keep-alive answer within its TTL) or at Close.
		if b.ctx.Err() == nil {
			b.lost(id, "its keep-alive ended (no answer from the cluster within the lease's TTL, or the lease was revoked)")
		}
	}()
	if again {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.reattach(id)
		}()
	}
	return id, nil
}

// lost forgets lease id (if it is still the current one), logs it once
// and grants a new one in the background (renew).
func (b *Backend) lost(id clientv3.LeaseID, why string) {
	b.mu.Lock()
	cur := b.lease == id && b.ctx.Err() == nil
	if cur {
		b.lease = 0
		b.wg.Add(1)
	}
	b.mu.Unlock()
	if cur {
		b.log.Warn("etcd catalog: this host's lease is lost; a new one is granted, and this host's leased keys "+
			"(uploads in progress) that still exist move to it", "lease", fmt.Sprintf("%x", int64(id)), "why", why)
		go func() {
			defer b.wg.Done()
			b.renew()
		}()
	}
}

// renew grants a new lease after the keep-alive of the last one ended,
// every renewPause until it gets one (or a commit did) or Close.
func (b *Backend) renew() {
	for b.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(b.ctx, b.reqTO)
		_, err := b.currentLease(ctx)
		cancel()
		if err == nil || errors.Is(err, kv.ErrReplaced) || !pause(b.ctx, renewPause) {
			return
		}
	}
}

// currentLease returns the lease for Leased puts and tokens, granting a
// new one when the last was lost (one grant at a time: a caller waits for
// the grant under way, or until ctx ends).
func (b *Backend) currentLease(ctx context.Context) (clientv3.LeaseID, error) {
	b.mu.Lock()
	id := b.lease
	b.mu.Unlock()
	if id != 0 {
		return id, nil
	}
	select {
	case b.granting <- struct{}{}:
	case <-ctx.Done():
		return 0, mapErr(ctx.Err())
	}
	defer func() { <-b.granting }()
	b.mu.Lock()
	id = b.lease
	b.mu.Unlock()
	if id != 0 {
		return id, nil
	}
	return b.grant(ctx)
}

// noteLeased records what an applied batch did to Leased keys: a Leased
// put is remembered with its revision and lease; a plain put, a delete
// or a range delete forgets the keys it covers.
func (b *Backend) noteLeased(p *prepared, lease clientv3.LeaseID, rev int64) {
	b.lmu.Lock()
	defer b.lmu.Unlock()
	for _, op := range p.ops {
		switch {
		case op.Kind == kv.Put && op.Leased:
			if b.leased == nil {
				b.leased = map[string]leasedKey{}
			}
			b.leased[op.Key] = leasedKey{rev: rev, lease: lease}
		case op.Kind == kv.DeleteRange:
			for k := range b.leased {
				if k >= op.Key && (op.End == "" || k < op.End) {
					delete(b.leased, k)
				}
			}
		default:
			delete(b.leased, op.Key)
		}
	}
}

// reattach moves the Leased keys of older leases to lease: each is put
// again with its value and lease, if its ModRevision is still the one
// this Backend wrote; a key that changed or vanished is forgotten. A key
// that could not be moved (no answer) is tried again every renewPause
// while lease is current.
func (b *Backend) reattach(lease clientv3.LeaseID) {
	b.lmu.Lock()
	todo := map[string]leasedKey{}
	for k, lk := range b.leased {
		if lk.lease != lease {
			todo[k] = lk
		}
	}
	b.lmu.Unlock()
	moved, gone := 0, 0
	for len(todo) > 0 {
		for k, lk := range todo {
			ctx, cancel := context.WithTimeout(b.ctx, b.reqTO)
			key := b.ns + k
			resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", lk.rev)).
				Then(clientv3.OpPut(key, "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease))).
				Else(clientv3.OpGet(key)).Commit()
			cancel()
			if err != nil {
				if errors.Is(err, context.Canceled) && b.ctx.Err() != nil {
					return
				}
				continue // tried again
			}
			delete(todo, k)
			now, ok := leasedKey{rev: resp.Header.Revision, lease: lease}, resp.Succeeded
			if !ok {
				// An earlier try whose answer was lost may have moved it.
				if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) == 1 && clientv3.LeaseID(r.Kvs[0].Lease) == lease {
					now, ok = leasedKey{rev: r.Kvs[0].ModRevision, lease: lease}, true
				}
			}
			b.lmu.Lock()
			if b.leased[k] == lk { // not written by a commit meanwhile
				if ok {
					b.leased[k] = now
				} else {
					delete(b.leased, k)
				}
			}
			b.lmu.Unlock()
			if ok {
				moved++
			} else {
				gone++
			}
		}
		if len(todo) == 0 {
			break
		}
		b.mu.Lock()
		cur := b.lease == lease
		b.mu.Unlock()
		if !cur || !pause(b.ctx, renewPause) {
			return // the next lease takes them over
		}
	}
	if moved+gone > 0 {
		b.log.Info("etcd catalog: this host's leased keys moved to its new lease", "lease", fmt.Sprintf("%x", int64(lease)),
			"moved", moved, "gone", gone)
	}
}

// isToken reports whether key (without the namespace) is a commit token.
func isToken(key string) bool { return strings.HasPrefix(key, tokenPrefix) }
