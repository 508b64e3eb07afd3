package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/store/kv"
)

// The commit protocol: why and how a commit survives a leader failover.
//
// A write reaches etcd's raft through the member the client talks to; a
// follower forwards it to the leader. When the leader stops (it first
// hands its leadership over) or dies, a forwarded proposal can be dropped
// without an answer (a leader transferring its leadership drops
// proposals; a dead one never sees them), and the follower waits until
// the request's deadline: the commit fails with a timeout after the whole
// request_timeout although a new leader was elected within 1-2 s. A
// request in flight on the stopping member's connection fails at once
// (Unavailable, "error reading from server: EOF"). In both cases the
// write may or may not be applied, later or already: trying it again
// blindly could apply it twice, or make a name claim find its own first
// write (EEXIST).
//
// So each Commit carries a token, a key of its own:
//
//	tx/<session>/<number>/a   put in the Then branch (this host's lease)
//	tx/<session>/<number>/p   put in the Else branch of a retry
//
// (<session>: 16 random hex digits per Backend; <number>: 16 hex digits,
// one per Commit). Its transaction is
//
//	If   Conds, and no key under tx/<session>/<number>/ (one range compare)
//	Then Ops; put .../a; delete the tokens of earlier, settled commits
//	Else read every Cond key; read tx/<session>/<number>/; on a retry, put .../p
//
// and an attempt whose outcome is unknown (the connection failed, the
// server timed out, or the attempt was abandoned: see attempt) is sent
// again, the same transaction, until one answers or the deadline passes:
//
//   - Then ran: the change is applied at the answer's revision. No earlier
//     attempt was (it would have put .../a, failing the compare), and none
//     can be later (.../a exists).
//   - Else ran and .../a exists: an earlier attempt applied the change, at
//     .../a's ModRevision; that is the result.
//   - Else ran, no .../a, and a Cond does not hold: a real conflict
//     (kv.ErrConflict with Result.Current). The retry's .../p makes sure
//     no earlier attempt still in flight applies afterwards.
//   - Else ran, no .../a, every Cond holds: only a retry's .../p failed
//     the compare; the change was never applied and never will be, so it
//     is committed afresh under a new token.
//
// Both puts carry this host's lease when it has one (a commit does not
// wait for a lost lease to be granted again, unless its batch has a
// Leased put), so that a crashed host's tokens vanish. etcd refuses a
// transaction whose chosen branch puts with a lease that no longer
// exists, so a retry either finds the token of an earlier attempt or
// learns that the lease (and the token with it) is gone, and then
// reports the outcome unknown (kv.ErrUnavailable) instead of applying the
// change a second time. Tokens are removed by a later commit's range
// delete (one op), and by Close; those of a commit that had an uncertain
// attempt are kept a minute, long after any stray proposal of it could
// be applied. Extra cost per commit: one compare, two Then ops
// (one put, one range delete), one or two Else ops, against
// --max-txn-ops (128 by default).
//
// An attempt is abandoned (and retried as above) when it has waited
// stallCheck and the cluster's leadership is not what it was when the
// attempt started (etcd's Status of every member, every stallRecheck: a
// new raft term, no leader, members that disagree), or when it has
// waited attemptLimit (doubled at each attempt): a commit that is only
// slow on a stable cluster is not sent again before attemptLimit, and its
// retry then finds the token if the first attempt applied meanwhile.

// tokenPrefix is the key prefix of commit tokens (relative to the
// namespace). It is reserved: Scan and Watch do not report it, and a
// Batch must not write under it.
const tokenPrefix = "tx/"

const (
	// stallCheck: an attempt unanswered this long has the cluster's
	// leadership checked, and again every stallRecheck.
	stallCheck   = 500 * time.Millisecond
	stallRecheck = 250 * time.Millisecond
	// statusTimeout bounds the Status requests of a check (a stopped
	// member's would wait for it).
	statusTimeout = 400 * time.Millisecond
	// attemptLimit: the first attempt is abandoned after this even on a
	// stable cluster (a proposal dropped without a term change); each
	// next one waits twice as long.
	attemptLimit = 2 * time.Second
	// retryPause: the pause before an attempt after one that failed at
	// once (a closed connection, no leader).
	retryPause = 50 * time.Millisecond
	// tokenKeep: how long the token of a commit that had an uncertain
	// attempt is kept after its outcome is settled.
	tokenKeep = time.Minute
)

// errAbandoned is the cause of an attempt cancelled by its stall check.
var errAbandoned = errors.New("attempt abandoned: the cluster's leadership changed while it waited, or it waited too long")

// tokens numbers this Backend's commits and knows which tokens must stay.
type tokens struct {
	mu       sync.Mutex
	next     uint64              // the next commit's number
	inflight map[uint64]struct{} // commits under way
	held     []heldToken         // settled after an uncertain attempt, kept tokenKeep
	cleaned  uint64              // tokens below this number are deleted
}

type heldToken struct {
	n     uint64
	until time.Time
}

// begin returns a new commit's number.
func (t *tokens) begin() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.next
	t.next++
	if t.inflight == nil {
		t.inflight = map[uint64]struct{}{}
	}
	t.inflight[n] = struct{}{}
	return n
}

// end records that commit n is over; uncertain: one of its attempts had
// an unknown outcome, so a stray proposal of it may still be applied for
// a while, and its token must stay.
func (t *tokens) end(n uint64, uncertain bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, n)
	if uncertain {
		t.held = append(t.held, heldToken{n, time.Now().Add(tokenKeep)})
	}
}

// low returns the first commit number whose token must stay (the tokens
// below it can be deleted) and whether some of those are not deleted yet.
func (t *tokens) low() (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	low := t.next
	for n := range t.inflight {
		low = min(low, n)
	}
	keep := t.held[:0]
	for _, h := range t.held {
		if now.Before(h.until) {
			keep = append(keep, h)
			low = min(low, h.n)
		}
	}
	t.held = keep
	return low, low > t.cleaned
}

// deleted records that the tokens below n are deleted.
func (t *tokens) deleted(n uint64) {
	t.mu.Lock()
	t.cleaned = max(t.cleaned, n)
	t.mu.Unlock()
}

// tokenDir is the key prefix of commit n's tokens (with the namespace).
func (b *Backend) tokenDir(n uint64) string {
	return fmt.Sprintf("%s%s%s/%016x/", b.ns, tokenPrefix, b.session, n)
}

// prepared is a batch turned into what its attempts send.
type prepared struct {
	conds []kv.Cond
	cmps  []clientv3.Cmp
	reads []clientv3.Op
	ops   []kv.Op // the batch's Ops, a key's Put or Delete reduced to its last
}

// prepare turns batch into etcd compares and reads, and reduces several
// Put or Delete Ops of one key to the last.
func (b *Backend) prepare(batch *kv.Batch) (*prepared, error) {
	p := &prepared{
		conds: batch.Conds,
		cmps:  make([]clientv3.Cmp, len(batch.Conds)),
		reads: make([]clientv3.Op, len(batch.Conds)),
	}
	for i, c := range batch.Conds {
		k := b.ns + c.Key
		if c.ModRev == 0 {
			p.cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
		} else {
			p.cmps[i] = clientv3.Compare(clientv3.ModRevision(k), "=", c.ModRev)
		}
		p.reads[i] = clientv3.OpGet(k)
	}
	last := make(map[string]int, len(batch.Ops))
	for i, op := range batch.Ops {
		if op.Kind != kv.DeleteRange {
			last[op.Key] = i
		}
		if strings.HasPrefix(op.Key, tokenPrefix) {
			return nil, fmt.Errorf("etcd commit: key %q is under %s, reserved for commit tokens", op.Key, tokenPrefix)
		}
	}
	for i, op := range batch.Ops {
		switch op.Kind {
		case kv.Put, kv.Delete:
			if last[op.Key] == i {
				p.ops = append(p.ops, op)
			}
		case kv.DeleteRange:
			p.ops = append(p.ops, op)
		default:
			return nil, fmt.Errorf("etcd commit: unknown op kind %d", op.Kind)
		}
	}
	return p, nil
}

// tokenEnd is the end of the token range [tokenPrefix, tokenEnd).
const tokenEnd = "tx0" // "/" + 1

// outsideTokens splits the range [lo, hi) of a DeleteRange (hi "": to the
// namespace's end) into the parts outside the token range: none, one or
// two [lo, hi) pairs, hi "" still meaning the namespace's end.
func outsideTokens(lo, hi string) [][2]string {
	if lo >= tokenEnd || (hi != "" && hi <= tokenPrefix) {
		return [][2]string{{lo, hi}}
	}
	var out [][2]string
	if lo < tokenPrefix {
		out = append(out, [2]string{lo, tokenPrefix})
	}
	if hi == "" || hi > tokenEnd {
		out = append(out, [2]string{tokenEnd, hi})
	}
	return out
}

// txn returns the builder of an attempt of commit n: retry says an
// earlier attempt's outcome is unknown (the Else branch then puts
// .../p); cleanTo > 0 deletes the tokens of commits below it.
func (b *Backend) txn(p *prepared, lease clientv3.LeaseID, n uint64, retry bool, cleanTo uint64) func(context.Context) clientv3.Txn {
	dir := b.tokenDir(n)
	cmps := append(append(make([]clientv3.Cmp, 0, len(p.cmps)+1), p.cmps...),
		clientv3.Compare(clientv3.CreateRevision(dir), "=", 0).WithPrefix())
	then := make([]clientv3.Op, 0, len(p.ops)+2)
	for _, op := range p.ops {
		switch op.Kind {
		case kv.Put:
			if op.Leased {
				then = append(then, clientv3.OpPut(b.ns+op.Key, string(op.Value), clientv3.WithLease(lease)))
			} else {
				then = append(then, clientv3.OpPut(b.ns+op.Key, string(op.Value)))
			}
		case kv.Delete:
			then = append(then, clientv3.OpDelete(b.ns+op.Key))
		case kv.DeleteRange:
			// etcd refuses a range delete overlapping a put of the same
			// transaction ("duplicate key given in txn request"): the
			// commit tokens' range is left out (they are leased, and
			// deleted by their own hosts).
			for _, r := range outsideTokens(op.Key, op.End) {
				then = append(then, clientv3.OpDelete(b.ns+r[0], clientv3.WithRange(b.end(r[1]))))
			}
		}
	}
	then = append(then, clientv3.OpPut(dir+"a", "", clientv3.WithLease(lease)))
	if cleanTo > 0 {
		then = append(then, clientv3.OpDelete(b.ns+tokenPrefix+b.session+"/", clientv3.WithRange(b.tokenDir(cleanTo))))
	}
	els := append(append(make([]clientv3.Op, 0, len(p.reads)+2), p.reads...),
		clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	if retry {
		els = append(els, clientv3.OpPut(dir+"p", "", clientv3.WithLease(lease)))
	}
	return func(ctx context.Context) clientv3.Txn {
		return b.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...)
	}
}

// outcome reads an answered attempt: applied (with its revision), or a
// conflict (with Current), or neither (again: only a retry's .../p
// failed the compare; commit afresh).
func (b *Backend) outcome(p *prepared, resp *clientv3.TxnResponse) (res kv.Result, applied, again bool) {
	res.Rev = resp.Header.Revision
	if resp.Succeeded {
		return res, true, false
	}
	if n := len(p.conds); n < len(resp.Responses) {
		if r := resp.Responses[n].GetResponseRange(); r != nil {
			for _, k := range r.Kvs {
				if strings.HasSuffix(string(k.Key), "/a") {
					return kv.Result{Rev: k.ModRevision}, true, false // an earlier attempt applied it
				}
			}
		}
	}
	res.Current = make([]kv.Pair, len(p.conds))
	holds := true
	for i, c := range p.conds {
		res.Current[i] = kv.Pair{Key: c.Key}
		if i < len(resp.Responses) {
			if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
				res.Current[i] = b.pair(r.Kvs[0])
			}
		}
		holds = holds && res.Current[i].ModRev == c.ModRev
	}
	return res, false, holds
}

// Commit writes b in one etcd transaction: If every Cond holds (its key's
// ModRevision equals Cond.ModRev; CreateRevision 0 for ModRev 0), Then the
// Ops, Else a read of every Cond key (Result.Current, with
// kv.ErrConflict). Several Put/Delete Ops of one key are reduced to the
// last (etcd refuses a key written twice in a transaction); a DeleteRange
// overlapping a Put or Delete of the same batch is refused by etcd. Keys
// under tx/ are reserved (commit tokens).
//
// An attempt whose outcome is unknown (a leader failover, a member that
// stops) is sent again until the deadline; the commit's token makes that
// exact (applied once, or not at all; see the top of commit.go). A leader
// failover costs a commit in flight about 0.5 s when the leader is
// stopped (stallCheck notices the new term) and 1.5-3 s when it dies (the
// others' election timeout, then the retry); measured by
// TestCommitDuringLeaderFailover.
//
// Errors: kv.ErrConflict, kv.ErrTooLarge (request over the server's
// --max-request-bytes or the client's 2 MiB, more Conds or Ops than
// --max-txn-ops less 2), an error wrapping syscall.ENOSPC (the NOSPACE
// alarm), kv.ErrUnavailable (no answer before the deadline: the outcome
// is then unknown).
func (b *Backend) Commit(ctx context.Context, batch *kv.Batch) (kv.Result, error) {
	if err := b.replacedErr(); err != nil {
		return kv.Result{}, fmt.Errorf("etcd commit: %w", err)
	}
	p, err := b.prepare(batch)
	if err != nil {
		return kv.Result{}, err
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	res, err := b.commitLoop(rctx, p)
	b.note(err)
	if rerr := b.replacedErr(); rerr != nil {
		// Its answer came from another catalog: whatever it says (a
		// conflict, mostly) is not about this host's.
		return kv.Result{}, fmt.Errorf("etcd commit: %w", rerr)
	}
	if err != nil {
		return res, fmt.Errorf("etcd commit: %w", err)
	}
	return res, nil
}

// commitLoop runs the attempts of a commit; its error is mapped (mapErr).
func (b *Backend) commitLoop(ctx context.Context, p *prepared) (kv.Result, error) {
	n := b.toks.begin()
	uncertain := false // an attempt of commit n had an unknown outcome
	defer func() { b.toks.end(n, uncertain) }()
	lease, err := b.commitLease(ctx, p)
	if err != nil {
		return kv.Result{}, err
	}
	renewed := false
	var firstDoubt error // the first unknown outcome, for the error
	limit := attemptLimit
	start, attempts := time.Now(), 0
	for {
		attempts++
		cleanTo, clean := b.toks.low()
		if !clean {
			cleanTo = 0
		}
		t0 := time.Now()
		resp, err := b.attempt(ctx, b.txn(p, lease, n, uncertain, cleanTo), limit)
		if err != nil {
			b.log.Debug("etcd commit attempt failed", "commit", n, "retry", uncertain, "after", time.Since(t0), "err", err)
		}
		switch {
		case err == nil:
			res, applied, again := b.outcome(p, resp)
			if applied {
				if cleanTo > 0 && resp.Succeeded {
					b.toks.deleted(cleanTo)
				}
				b.noteLeased(p, lease, res.Rev)
				if attempts > 1 {
					b.log.Info("etcd catalog: change committed after a retry (a member stopped, or the leader changed)",
						"attempts", attempts, "ms", time.Since(start).Milliseconds())
				}
				return res, nil
			}
			if !again {
				return res, kv.ErrConflict
			}
			// Never applied, and never will be: commit afresh.
			b.toks.end(n, uncertain)
			n, uncertain, firstDoubt, limit = b.toks.begin(), false, nil, attemptLimit
			continue
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			if uncertain {
				// The token of an earlier attempt may have gone with the
				// lease: whether it applied cannot be learnt.
				return kv.Result{}, unknown(firstDoubt, fmt.Errorf("this host's lease expired meanwhile: %w", err))
			}
			if renewed {
				return kv.Result{}, mapErr(err)
			}
			// The lease expired (a partition longer than its TTL) before
			// its keep-alive noticed; the attempt was refused whole.
			b.lost(lease, "a write found it expired")
			renewed = true
			if lease, err = b.commitLease(ctx, p); err != nil {
				return kv.Result{}, err
			}
			continue
		case notProposed(err):
			// No leader where it was sent (an election): refused before
			// it was proposed.
			if !pause(ctx, 2*retryPause) {
				return kv.Result{}, doubt(uncertain, firstDoubt, err)
			}
			continue
		case errors.Is(err, errAbandoned) || errors.Is(mapErr(err), kv.ErrUnavailable):
			if !uncertain {
				uncertain, firstDoubt = true, err
			}
			if errors.Is(err, errAbandoned) {
				limit *= 2
			}
			if !pause(ctx, retryPause) {
				return kv.Result{}, unknown(firstDoubt, err)
			}
			continue
		default:
			return kv.Result{}, doubt(uncertain, firstDoubt, err)
		}
	}
}

// commitLease returns the lease of a commit's Leased puts and token: a
// batch with a Leased put waits for a lease to be granted when the last
// was lost; any other takes the current lease, or none (its token then
// stays until a later commit of this Backend, or Close, deletes it).
func (b *Backend) commitLease(ctx context.Context, p *prepared) (clientv3.LeaseID, error) {
	for _, op := range p.ops {
		if op.Kind == kv.Put && op.Leased {
			id, err := b.currentLease(ctx)
			if err != nil {
				return 0, fmt.Errorf("lease: %w", err)
			}
			return id, nil
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lease, nil
}

// pause waits d, or until ctx ends (false).
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// unknown is the error of a commit whose outcome could not be learnt.
func unknown(first, last error) error {
	if first == nil || first == last {
		return fmt.Errorf("%w: %w (the change may have been applied)", kv.ErrUnavailable, last)
	}
	return fmt.Errorf("%w: %v, then %w (the change may have been applied)", kv.ErrUnavailable, first, last)
}

// doubt maps err, the last attempt's: after an attempt with an unknown
// outcome (uncertain), any failure leaves the outcome unknown.
func doubt(uncertain bool, first, err error) error {
	if uncertain {
		return unknown(first, mapErr(err))
	}
	return mapErr(err)
}

// attempt sends one attempt of a commit and waits for its answer; it is
// abandoned (errAbandoned) when it has waited stallCheck and the
// cluster's leadership changed since it began (unsettled), or when it
// has waited limit.
func (b *Backend) attempt(ctx context.Context, txn func(context.Context) clientv3.Txn, limit time.Duration) (*clientv3.TxnResponse, error) {
	term, floor := b.term.Load(), b.floor()
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	start := time.Now()
	go func() {
		t := time.NewTimer(stallCheck)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-actx.Done():
				return
			case <-t.C:
			}
			checked := time.Now()
			if checked.Sub(start) >= limit || b.unsettled(actx, term) {
				cancel(errAbandoned)
				return
			}
			t.Reset(max(0, stallRecheck-time.Since(checked)))
		}
	}()
	resp, err := txn(actx).Commit()
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(actx), errAbandoned) {
			return nil, fmt.Errorf("%w after %v", errAbandoned, time.Since(start).Round(time.Millisecond))
		}
		return nil, err
	}
	b.noteTerm(resp.Header)
	b.noteHeader(resp.Header, floor)
	return resp, nil
}

// unsettled reports whether the cluster's leadership is not what it was
// at raft term term: a member that answers Status within statusTimeout
// reports another term or no leader, or two name different leaders. It
// returns at the first such answer. Members that do not answer are not
// counted (one stopped member, or an outage: then nothing is unsettled
// and the attempt waits).
func (b *Backend) unsettled(ctx context.Context, term uint64) bool {
	eps := b.cli.Endpoints()
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	answers := make(chan *clientv3.StatusResponse, len(eps))
	for _, ep := range eps {
		go func() {
			st, err := b.cli.Status(sctx, ep)
			if err != nil {
				st = nil
			}
			answers <- st
		}()
	}
	var leader uint64
	for range eps {
		st := <-answers
		if st == nil {
			continue
		}
		b.noteTerm(st.Header)
		if st.Leader == 0 || st.RaftTerm != term || (leader != 0 && st.Leader != leader) {
			return true // the others end with sctx
		}
		leader = st.Leader
	}
	return false
}

// noteTerm records the highest raft term seen in a response.
func (b *Backend) noteTerm(h *etcdserverpb.ResponseHeader) {
	if h == nil {
		return
	}
	for {
		cur := b.term.Load()
		if h.RaftTerm <= cur || b.term.CompareAndSwap(cur, h.RaftTerm) {
			return
		}
	}
}

// notProposed reports whether a write was refused before it reached raft
// (no leader at the member that got it, or a member whose apply lags
// too far behind its commits): it was not applied.
func notProposed(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTooManyRequests) ||
		strings.Contains(err.Error(), "raft proposal dropped"))
}
