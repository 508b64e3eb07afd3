// Package kv is the interface between the store and the database that
// keeps its catalog: an ordered key-value store with atomic batches
// guarded by revision conditions, and, for a catalog shared by many
// hosts, watches and keys bound to this host's session.
//
// Two implementations:
//
//   - kv/pebblekv: Pebble in STORE/catalog, the embedded default. One
//     process writes it (the store serializes its commits), so a batch's
//     conditions hold by construction and are not checked; it has no
//     watch (Shared reports false).
//   - kv/etcdkv: an etcd cluster shared by every host (etcd v3 API,
//     revisions as etcd's). Conditions are checked in the same etcd
//     transaction that writes the batch; Watch pushes every host's
//     commits; Leased keys vanish when this host's lease expires.
//
// The store owns the key layout (img/<id>, name/<name>, ...), the rules
// and the in-memory published state; a backend knows nothing of images.
// Every call that may wait on a network takes a context: a backend
// returns within the context's deadline, with ErrUnavailable when the
// database could not be reached in time.
package kv

import (
	"context"
	"errors"
)

// Errors of every backend. Backends wrap them (errors.Is) with a message
// that names the problem and never a credential.
var (
	// ErrConflict: a Cond of the batch did not hold; nothing was written.
	// Result.Current then holds the current state of every Cond key.
	ErrConflict = errors.New("catalog: a condition of the change no longer holds")
	// ErrUnavailable: the database could not be reached, or did not
	// answer, before the context's deadline (no quorum, every endpoint
	// down). Nothing is known to be written, except after a Commit whose
	// outcome could not be learnt (see Commit).
	ErrUnavailable = errors.New("catalog unavailable")
	// ErrCompacted: Watch was asked for revisions the database no longer
	// keeps; the caller must Scan again and watch from there.
	ErrCompacted = errors.New("catalog: watched revision compacted")
	// ErrBroken: an embedded catalog whose commit failed midway (an I/O
	// error); it is neither written nor read again until reopened.
	ErrBroken = errors.New("catalog broken")
	// ErrTooLarge: the batch exceeds what the database accepts in one
	// request.
	ErrTooLarge = errors.New("catalog: change too large")
	// ErrReplaced: the database answering is not the catalog this
	// backend opened (a shared catalog wiped, recreated or restored
	// under it: another cluster id, a revision that went back); every
	// call fails with it, without a request, until the backend is opened
	// again.
	ErrReplaced = errors.New("catalog replaced")
)

// No space is reported as an error wrapping syscall.ENOSPC (the embedded
// catalog's filesystem lacks the batch plus headroom, or etcd's NOSPACE
// alarm is raised).

// Pair is one key with its value and revisions. ModRev is the revision
// of the key's last change, CreateRev that of its creation (0 for a key
// that does not exist: a Pair with ModRev 0 means "absent"). The embedded
// backend reports 1 for both of every existing key.
type Pair struct {
	Key       string
	Value     []byte
	ModRev    int64
	CreateRev int64
}

// OpKind is what an Op does.
type OpKind uint8

const (
	Put         OpKind = iota // set Key to Value
	Delete                    // remove Key (no error if absent)
	DeleteRange               // remove every key in [Key, End)
)

// Op is one write of a batch.
type Op struct {
	Kind  OpKind
	Key   string
	End   string // DeleteRange only
	Value []byte // Put only
	// Leased (Put only): the key lives only as long as this host's
	// session; when the host dies or loses the database for longer than
	// the session's TTL, the database deletes it (an etcd lease). The
	// embedded backend ignores it.
	Leased bool
}

// Cond is a condition a batch commits under: Key's ModRev equals ModRev
// (0: the key must not exist).
type Cond struct {
	Key    string
	ModRev int64
}

// Room is how much free space a batch needs on an embedded catalog's
// filesystem (ignored by a shared backend).
type Room uint8

const (
	// Grows: a change that may grow the catalog (a new image, a property
	// value): the batch plus about 8 MiB of headroom.
	Grows Room = iota
	// Small: a status change or a removal: the batch plus 1 MiB.
	Small
	// Frees: a delete; it must work on a full disk (it may use the
	// store's reserve).
	Frees
)

// Batch is a set of writes committed atomically, under Conds.
type Batch struct {
	Conds []Cond
	Ops   []Op
	Room  Room
	// NoSync: the commit need not be durable when it returns (a change
	// whose loss in a crash the next open repairs). A shared backend is
	// always durable.
	NoSync bool
}

// Result is what a Commit returns.
type Result struct {
	// Rev is the revision of the commit (on success), or the database's
	// current revision (on ErrConflict).
	Rev int64
	// Current, on ErrConflict only: the current Pair of every Cond key,
	// in Conds' order (ModRev 0 for a key that does not exist).
	Current []Pair
}

// EventType says what happened to a key.
type EventType uint8

const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change a Watch reports. For EventDelete, Pair.Value is
// nil and Pair.ModRev is the revision of the delete.
type Event struct {
	Type EventType
	Pair Pair
}

// WatchBatch is what a Watch delivers: the events of one or more
// revisions, in revision order, and the revision they bring the watcher
// to. Err, when set, ends the watch: ErrCompacted (scan again) or
// ErrUnavailable (the backend gave up; watch again after a Scan).
type WatchBatch struct {
	Rev    int64
	Events []Event
	Err    error
}

// Backend is a catalog database.
type Backend interface {
	// Scan calls fn for every key in [lo, hi) in key order, as of revision
	// rev (0: the latest), and returns the revision it read at; fn's
	// error stops the scan and is returned. Scans of several ranges at one
	// returned revision see one consistent state. fn must not keep
	// Pair.Value after it returns (the embedded backend lends its
	// iterator's buffer). Errors: ErrUnavailable, ErrBroken, ErrCompacted
	// (rev no longer kept).
	Scan(ctx context.Context, lo, hi string, rev int64, fn func(Pair) error) (int64, error)
	// Get returns key's current Pair (ModRev 0 when absent).
	Get(ctx context.Context, key string) (Pair, error)
	// Check reports whether b could be committed now as far as space goes
	// (ENOSPC), without committing it; conditions are not checked.
	Check(b *Batch) error
	// Commit applies b atomically if every Cond holds: ErrConflict (with
	// Result.Current) when one does not, ENOSPC, ErrTooLarge, ErrBroken,
	// ErrUnavailable. After ErrUnavailable from a shared backend the batch
	// may or may not have been applied (the request may have reached the
	// database before the connection failed): a caller that must know
	// reads the keys back.
	Commit(ctx context.Context, b *Batch) (Result, error)
	// Shared reports whether other hosts may write the catalog (then
	// Watch works and Conds are checked).
	Shared() bool
	// Watch reports, from revision from on, every change of a key with
	// prefix, until ctx ends (the channel is then closed). A backend that
	// is not Shared returns a nil channel.
	Watch(ctx context.Context, prefix string, from int64) <-chan WatchBatch
	// Close releases the backend; Leased keys of this host are revoked.
	Close() error
}

// Iter is an iterator over a key range (the methods of Pebble's
// iterator): a backend that can iterate its keys in place implements
// Iterable; the store keeps its property index there. Valid reports
// whether the iterator is at a key; First, SeekGE and Next report Valid.
type Iter interface {
	First() bool
	SeekGE(key []byte) bool
	Next() bool
	Valid() bool
	Key() []byte
	Value() []byte
	Error() error
	Close() error
}

// Iterable is a Backend whose keys can be iterated in place with Iter,
// without copying a range first (the embedded backend).
type Iterable interface {
	NewIter(lo, hi string) (Iter, error)
}

// Identified is a Shared backend that names the catalog it serves: a
// host's cached copy of the catalog (the store's snapshot) is used only
// with the catalog it was taken from.
type Identified interface {
	// Identity names the database and the part of it this backend
	// serves (etcd: the cluster's id and the namespace); "" when unknown.
	Identity() string
}

// Prober is a Shared backend that can tell, cheaply, whether a change
// would reach the database now, so that a caller whose own commit comes
// later (a property file's close, which shells ignore) can refuse early.
type Prober interface {
	// Probe returns nil when the database answered a request recently
	// (about a second) or answers one now; ErrUnavailable when it does
	// not answer within ctx's deadline (while it is known unreachable,
	// within about a second); ErrReplaced. A nil from Probe promises
	// nothing about a later Commit.
	Probe(ctx context.Context) error
	// Replaced returns the error (wrapping ErrReplaced) of a backend
	// that found the database answering is not the catalog it opened,
	// else nil; it sends no request.
	Replaced() error
}
