// Package etcdkv is kv.Backend on an etcd cluster (v3 API, server 3.4 or
// later): the catalog shared by every host.
//
// Every key lives under Config.Namespace (default "/imagefs/"), so several
// catalogs can share one cluster; the keys the store sees have the
// namespace removed. Revisions are etcd's. Conds are compares of the same
// etcd transaction that writes the batch; Leased puts are bound to one
// lease of this Backend (Config.LeaseTTL), kept alive while the process
// lives, granted again (the Leased keys moved to it) when it is lost, and
// revoked by Close (lease.go).
//
// A commit survives a leader failover or a member that stops: an attempt
// whose outcome is unknown is sent again, made exact by a token key of
// the commit under tx/ (reserved: Scan and Watch do not report it); see
// commit.go. Outages are logged once each way ("etcd catalog
// unreachable", "reachable again"), from requests and, for an outage
// longer than the lease's TTL, from the lease's renewal even when
// nothing else asks.
//
// Server settings the catalog relies on (scripts/etcd.sh starts a cluster
// with them): auto-compaction (--auto-compaction-mode revision
// --auto-compaction-retention 10000; without it etcd keeps every revision
// until its quota raises the NOSPACE alarm), --max-txn-ops above a batch's
// size (the default is 128 compares, and 128 writes, per transaction), and a
// request size limit (--max-request-bytes, 1.5 MiB by default) above the
// largest record. etcd does not let a client read its flags: Open logs the
// cluster's version and member count and warns when the history looks
// uncompacted (see checkCompaction).
package etcdkv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imagefs/imagefs/store/kv"
)

// Config says how to reach the cluster. Username, Password and the key
// file are secrets: they appear in no log line and no error.
type Config struct {
	Endpoints []string // host:port or http(s)://host:port
	// Namespace prefixes every key: several catalogs can share a cluster.
	// Default "/imagefs/".
	Namespace          string
	Username, Password string // etcd authentication (both empty: none)
	// TLS client certificate and key, and the CA that signed the servers'
	// certificates (https endpoints). All optional; an https endpoint
	// without CAFile uses the system's roots.
	CertFile, KeyFile, CAFile string
	DialTimeout               time.Duration // connecting at Open; default 5 s
	// RequestTimeout bounds each call whose ctx has no deadline; default 5 s.
	RequestTimeout time.Duration
	// LeaseTTL: Leased keys vanish this long after this host died or lost
	// the cluster; default 10 s (etcd rounds it up to whole seconds and to
	// its minimum, about 1.5 election timeouts).
	LeaseTTL time.Duration
	Logger   *slog.Logger // default slog.Default()
}

// Backend is an etcd catalog. It is safe for concurrent use.
type Backend struct {
	cli     *clientv3.Client
	ns      string
	nsEnd   string // end of the namespace's key range
	reqTO   time.Duration
	ttl     int64 // lease TTL, seconds
	log     *slog.Logger
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	wctx    context.Context // ends at Close, or when replaced: every Watch's
	wcancel context.CancelFunc
	wg      sync.WaitGroup
	closing sync.Once

	session string        // names this Backend's commit tokens (commit.go)
	toks    tokens        // this Backend's commits
	term    atomic.Uint64 // the highest raft term seen in an answer

	granting chan struct{} // holds a token while a lease is granted (a lock that a ctx can give up on)
	mu       sync.Mutex
	lease    clientv3.LeaseID // 0: none (lost; granted again in the background, or by the next commit)
	granted  bool             // a lease was granted before (the next grant gets the Leased keys)
	downAt   time.Time
	down     atomic.Bool // the last call found etcd unreachable
	closeErr error
	cluster  uint64 // the cluster's id (set at Open)

	// Health (health.go): the catalog's name for messages, when the
	// cluster last answered (unix ns), the highest revision a
	// linearizable answer reported, and the error of a replaced catalog.
	url    string
	lastOK atomic.Int64
	maxRev atomic.Int64
	gone   atomic.Pointer[error]

	lmu    sync.Mutex           // guards leased
	leased map[string]leasedKey // the Leased keys this Backend wrote and did not delete (lease.go)
}

var _ kv.Backend = (*Backend)(nil)

// reconnectMax bounds the pause between two attempts to connect to a
// member that does not answer.
const reconnectMax = time.Second

// Open connects to the cluster, checks it answers (member list, version),
// and grants this host's lease. Errors: kv.ErrUnavailable (no endpoint
// answered within DialTimeout), an authentication or TLS error (without
// the secret).
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "/imagefs/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	eps := strings.Join(cfg.Endpoints, ",")
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		// A dead connection is noticed within seconds, not at the next
		// request's deadline.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(), // the client's own logs are per request; we log outages once
		// A member that is back is connected to again within reconnectMax
		// (gRPC's default backoff grows to 120 s: after an outage of ten
		// seconds a client would wait several more for its next try).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: 5 * time.Second,
		})},
	}
	tlsc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	ccfg.TLS = tlsc
	url := catalogURL(cfg.Endpoints, tlsc != nil)
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: connect: %w", eps, mapErr(err))
	}
	session := make([]byte, 8)
	rand.Read(session)
	b := &Backend{
		cli:      cli,
		session:  hex.EncodeToString(session),
		granting: make(chan struct{}, 1),
		ns:       cfg.Namespace,
		nsEnd:    clientv3.GetPrefixRangeEnd(cfg.Namespace),
		reqTO:    cfg.RequestTimeout,
		ttl:      int64((cfg.LeaseTTL + time.Second - 1) / time.Second),
		log:      cfg.Logger,
		url:      url,
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wctx, b.wcancel = context.WithCancel(b.ctx)
	octx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := b.hello(octx, eps); err != nil {
		b.cancel()
		cli.Close()
		return nil, err
	}
	if _, err := b.grant(octx); err != nil {
		b.cancel()
		cli.Close()
		return nil, fmt.Errorf("etcd %s: lease: %w", eps, err)
	}
	return b, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	https := false
	for _, ep := range cfg.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	if !https && cfg.CertFile == "" && cfg.CAFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		// LoadX509KeyPair's errors name no key material.
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: TLS client certificate %s: %w", cfg.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd: TLS CA %s: no certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// hello logs the cluster's members and version and warns about settings
// the catalog needs.
func (b *Backend) hello(ctx context.Context, eps string) error {
	ml, err := b.cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("etcd %s: member list: %w", eps, mapErr(err))
	}
	b.cluster = ml.Header.ClusterId
	version := "unknown"
	var rev int64
	for _, ep := range b.cli.Endpoints() {
		st, err := b.cli.Status(ctx, ep)
		if err == nil {
			version, rev = st.Version, st.Header.Revision
			b.noteTerm(st.Header)
			break
		}
	}
	b.maxRev.Store(rev)
	b.noteAnswer()
	b.log.Info("etcd catalog connected", "endpoints", eps, "members", len(ml.Members),
		"version", version, "revision", rev, "namespace", b.ns)
	if version != "unknown" && (strings.HasPrefix(version, "3.0.") || strings.HasPrefix(version, "3.1.") ||
		strings.HasPrefix(version, "3.2.") || strings.HasPrefix(version, "3.3.") || strings.HasPrefix(version, "2.")) {
		b.log.Warn("etcd catalog: server older than 3.4, untested", "version", version)
	}
	b.checkCompaction(ctx, rev)
	return nil
}

// uncompactedRevs: a cluster whose revision is past this while revision 1
// is still readable has never compacted its history.
const uncompactedRevs = 100000

// checkCompaction warns when the cluster keeps its whole history. etcd does
// not expose its --auto-compaction flags to clients; what a client sees is
// whether old revisions are still readable. With auto-compaction by
// revision (retention 10000, checked every 5 minutes on 3.4) revision 1 is
// gone long before the revision reaches uncompactedRevs.
func (b *Backend) checkCompaction(ctx context.Context, rev int64) {
	if rev <= uncompactedRevs {
		return
	}
	_, err := b.cli.Get(ctx, b.ns, clientv3.WithRev(1), clientv3.WithCountOnly())
	if err == nil {
		b.log.Warn("etcd catalog: the cluster keeps its whole history (revision 1 is still readable); "+
			"start etcd with --auto-compaction-mode revision --auto-compaction-retention 10000, "+
			"or its database grows until the NOSPACE alarm stops every write", "revision", rev)
	}
}

// Identity names the catalog: the cluster's id (as etcd reports it in
// every response header) and the namespace.
func (b *Backend) Identity() string {
	return fmt.Sprintf("etcd cluster %016x namespace %q", b.cluster, b.ns)
}

var _ kv.Identified = (*Backend)(nil)

// Shared reports true: other hosts write the catalog too.
func (b *Backend) Shared() bool { return true }

// downTimeout bounds each request while etcd is known to be unreachable
// (the last request found it so): the store serializes its changes, so
// during an outage the requests queued behind the first would each wait
// a whole RequestTimeout. The first request that gets through clears it.
const downTimeout = time.Second

// reqCtx applies RequestTimeout to a ctx without a deadline, and
// downTimeout to any ctx while etcd is unreachable.
func (b *Backend) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.down.Load() {
		return context.WithTimeout(ctx, downTimeout)
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.reqTO)
}

// note records whether etcd answered: one log line when it becomes
// unreachable, one when it is back.
func (b *Backend) note(err error) {
	if err == nil {
		b.noteAnswer()
	}
	if err != nil && errors.Is(err, kv.ErrUnavailable) {
		if b.down.CompareAndSwap(false, true) {
			b.mu.Lock()
			b.downAt = time.Now()
			b.mu.Unlock()
			b.log.Warn("etcd catalog unreachable: changes fail until it is back", "err", err)
		}
		return
	}
	if b.down.Load() && b.down.CompareAndSwap(true, false) {
		b.mu.Lock()
		d := time.Since(b.downAt)
		b.mu.Unlock()
		b.log.Info("etcd catalog reachable again", "after", d.Round(time.Millisecond))
	}
}

// ErrNoSpace is what a write returns while the cluster's NOSPACE alarm is
// raised; it wraps syscall.ENOSPC.
var errNoSpace = fmt.Errorf("etcd: the cluster's NOSPACE alarm is raised (its database reached --quota-backend-bytes) "+
	"and every write is refused until an operator compacts, defragments and disarms it "+
	"(etcdctl compact REV; etcdctl defrag --cluster; etcdctl alarm disarm): %w", syscall.ENOSPC)

// mapErr turns a client error into the kv errors (the message of the
// original stays; etcd's errors carry no credential).
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoSpace):
		return errNoSpace
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: %w", kv.ErrTooLarge, err)
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%w: %w", kv.ErrCompacted, err)
	case errors.Is(err, rpctypes.ErrTooManyRequests):
		// ResourceExhausted too, but a member too busy to take it.
		return fmt.Errorf("%w: %w", kv.ErrUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", kv.ErrUnavailable, err)
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.DeadlineExceeded, codes.Unavailable, codes.Canceled:
			return fmt.Errorf("%w: %w", kv.ErrUnavailable, err)
		case codes.ResourceExhausted:
			// The client's own limit on a message it sends (2 MiB by
			// default); NOSPACE (also ResourceExhausted) was matched above.
			return fmt.Errorf("%w: %w", kv.ErrTooLarge, err)
		}
	}
	// etcd's "no leader" and "leader changed" errors: the request did not
	// get an answer from a quorum.
	if notProposed(err) || errors.Is(err, rpctypes.ErrLeaderChanged) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return fmt.Errorf("%w: %w", kv.ErrUnavailable, err)
	}
	return err
}

func (b *Backend) pair(k *mvccpb.KeyValue) kv.Pair {
	return kv.Pair{
		Key:       strings.TrimPrefix(string(k.Key), b.ns),
		Value:     k.Value,
		ModRev:    k.ModRevision,
		CreateRev: k.CreateRevision,
	}
}

// end is the etcd range end of a kv range end ("": to the namespace's end).
func (b *Backend) end(hi string) string {
	if hi == "" {
		return b.nsEnd
	}
	return b.ns + hi
}

// Scan pages size: the first page has firstPage keys; the next ones aim at
// pageBytes per response, between minPage and maxPage keys.
const (
	firstPage = 500
	minPage   = 16
	maxPage   = 10000
	pageBytes = 4 << 20
)

// Scan calls fn for every key in [lo, hi) ("" hi: to the end of the
// namespace), in key order, as of revision rev (0: the latest), and
// returns the revision read. It reads in pages (at most 4 MiB, at most
// 10,000 keys) at that one revision, each page starting after the last
// key of the one before. On etcd 3.4 each page costs a walk of the keys
// left in [start, hi) in the server's index (3.4 counts them), so the
// total is quadratic in the range's size over the page size: scan a large
// keyspace as several ranges (the store reads img/ as 16). Errors:
// kv.ErrCompacted (rev, or the revision of the first page, was compacted
// meanwhile: scan again at 0), kv.ErrUnavailable, fn's error. Commit
// tokens (tx/, commit.go) are not reported.
func (b *Backend) Scan(ctx context.Context, lo, hi string, rev int64, fn func(kv.Pair) error) (int64, error) {
	start, end := b.ns+lo, b.end(hi)
	limit := int64(firstPage)
	for {
		if err := b.replacedErr(); err != nil {
			return rev, fmt.Errorf("etcd scan %q..%q: %w", lo, hi, err)
		}
		rctx, cancel := b.reqCtx(ctx)
		floor := b.floor()
		resp, err := b.cli.Get(rctx, start, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(limit))
		cancel()
		err = mapErr(err)
		b.note(err)
		if err != nil {
			return rev, fmt.Errorf("etcd scan %q..%q: %w", lo, hi, err)
		}
		b.noteTerm(resp.Header)
		if b.noteHeader(resp.Header, floor); b.replacedErr() != nil {
			return rev, fmt.Errorf("etcd scan %q..%q: %w", lo, hi, b.replacedErr())
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		size := 0
		for _, k := range resp.Kvs {
			size += len(k.Key) + len(k.Value)
			p := b.pair(k)
			if isToken(p.Key) {
				continue
			}
			if err := fn(p); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		limit = min(max(int64(pageBytes/(size/len(resp.Kvs)+1)), minPage), maxPage)
	}
}

// Get returns key's current Pair (ModRev 0 when absent).
func (b *Backend) Get(ctx context.Context, key string) (kv.Pair, error) {
	if err := b.replacedErr(); err != nil {
		return kv.Pair{}, fmt.Errorf("etcd get %q: %w", key, err)
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	floor := b.floor()
	resp, err := b.cli.Get(rctx, b.ns+key)
	err = mapErr(err)
	b.note(err)
	if err != nil {
		return kv.Pair{}, fmt.Errorf("etcd get %q: %w", key, err)
	}
	b.noteTerm(resp.Header)
	if b.noteHeader(resp.Header, floor); b.replacedErr() != nil {
		return kv.Pair{}, fmt.Errorf("etcd get %q: %w", key, b.replacedErr())
	}
	if len(resp.Kvs) == 0 {
		return kv.Pair{Key: key}, nil
	}
	return b.pair(resp.Kvs[0]), nil
}

// Check returns nil: a shared backend has no local space to check; etcd
// reports its NOSPACE alarm at Commit.
func (b *Backend) Check(*kv.Batch) error { return nil }

// Watch reports every change of a key with prefix from revision from on,
// in revision order, until ctx ends, Close, or the catalog is found
// replaced (health.go; the channel is then closed).
// A batch is the events of one etcd watch response; its Rev is the
// revision of its last event (the response's revision for one without).
// When from was compacted, one batch with Err wrapping kv.ErrCompacted is
// sent and the channel closed. While etcd is unreachable the watch waits
// (the client reconnects and resumes after the last revision delivered; it
// reports nothing meanwhile: a caller that must know watches Unavailable
// through its own calls' errors); if the revision it resumes from was
// compacted during the outage, ErrCompacted is reported then. Commit
// tokens (tx/, commit.go) are not reported.
func (b *Backend) Watch(ctx context.Context, prefix string, from int64) <-chan kv.WatchBatch {
	out := make(chan kv.WatchBatch, 16)
	if err := b.replacedErr(); err != nil {
		out <- kv.WatchBatch{Err: fmt.Errorf("etcd watch %q: %w", prefix, err)}
		close(out)
		return out
	}
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.wctx, cancel)
	wch := b.cli.Watch(wctx, b.ns+prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		send := func(wb kv.WatchBatch) bool {
			select {
			case out <- wb:
				return true
			case <-wctx.Done():
				return false
			}
		}
		for wr := range wch {
			if b.noteHeader(wr.Header, 0); b.replacedErr() != nil {
				send(kv.WatchBatch{Rev: wr.Header.Revision, Err: fmt.Errorf("etcd watch %q: %w", prefix, b.replacedErr())})
				return
			}
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				send(kv.WatchBatch{Rev: wr.Header.Revision, Err: fmt.Errorf("etcd watch %q from %d: %w (compacted at %d)",
					prefix, from, kv.ErrCompacted, wr.CompactRevision)})
				return
			}
			if err := wr.Err(); err != nil {
				if wctx.Err() == nil {
					send(kv.WatchBatch{Rev: wr.Header.Revision, Err: fmt.Errorf("etcd watch %q: %w: %w", prefix, kv.ErrUnavailable, err)})
				}
				return
			}
			wb := kv.WatchBatch{Rev: wr.Header.Revision, Events: make([]kv.Event, 0, len(wr.Events))}
			for _, ev := range wr.Events {
				p := b.pair(ev.Kv)
				switch {
				case isToken(p.Key):
				case ev.Type == clientv3.EventTypeDelete:
					wb.Events = append(wb.Events, kv.Event{Type: kv.EventDelete, Pair: kv.Pair{Key: p.Key, ModRev: p.ModRev}})
				default:
					wb.Events = append(wb.Events, kv.Event{Type: kv.EventPut, Pair: p})
				}
			}
			if len(wb.Events) == 0 {
				continue
			}
			wb.Rev = wb.Events[len(wb.Events)-1].Pair.ModRev
			if !send(wb) {
				return
			}
		}
	}()
	return out
}

// closeTimeout bounds the requests of Close.
const closeTimeout = 2 * time.Second

// Close deletes this Backend's commit tokens and revokes its lease (its
// Leased keys vanish at once; at most 2 s are spent trying), ends every
// Watch and closes the client.
func (b *Backend) Close() error {
	b.closing.Do(func() {
		b.mu.Lock()
		id := b.lease
		b.lease = 0
		b.mu.Unlock()
		b.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		// This Backend's settled commit tokens (those put without a
		// lease would stay); nothing is said when etcd does not answer.
		// Nothing is sent to a replaced catalog (it is not this host's).
		low, _ := b.toks.low()
		if b.replacedErr() == nil {
			b.cli.Delete(ctx, b.ns+tokenPrefix+b.session+"/", clientv3.WithRange(b.tokenDir(low)))
		}
		if id != 0 && b.replacedErr() == nil {
			if _, err := b.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				b.log.Warn("etcd catalog: could not revoke this host's lease at close; its keys vanish after its TTL",
					"err", mapErr(err))
			}
		}
		cancel()
		b.closeErr = b.cli.Close()
		b.wg.Wait()
	})
	return b.closeErr
}
