package etcdkv

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/imagefs/imagefs/store/kv"
)

// headerBackend is a Backend with only what noteHeader uses: the cluster
// id as opened, a log, the watches' context.
func headerBackend(t *testing.T) (*Backend, *bytes.Buffer) {
	var log bytes.Buffer
	b := &Backend{cluster: 0xabc, url: "etcd://127.0.0.1:1", log: slog.New(slog.NewTextHandler(&log, nil))}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wctx, b.wcancel = context.WithCancel(b.ctx)
	t.Cleanup(b.cancel)
	return b, &log
}

// TestNoteHeaderRevisionFloor: answers of requests in flight at once come
// in any order (a commit at 394 answered before one at 393): only an
// answer below the highest revision seen before its request was sent
// makes the catalog replaced, and then it is logged once, every call
// fails with kv.ErrReplaced, and the watches' context ends.
func TestNoteHeaderRevisionFloor(t *testing.T) {
	b, log := headerBackend(t)
	b.maxRev.Store(390)
	f1, f2 := b.floor(), b.floor() // two requests sent at 390
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xabc, Revision: 394}, f2)
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xabc, Revision: 393}, f1)
	if err := b.Replaced(); err != nil {
		t.Fatalf("out-of-order answers of concurrent requests: %v", err)
	}
	if got := b.floor(); got != 394 {
		t.Fatalf("floor %d, want 394", got)
	}
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xabc, Revision: 3}, 0) // a watch's, a Status's
	if err := b.Replaced(); err != nil {
		t.Fatalf("an answer without a floor: %v", err)
	}
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xabc, Revision: 2}, b.floor())
	err := b.Replaced()
	if !errors.Is(err, kv.ErrReplaced) || !strings.Contains(err.Error(), "went back from 394 to 2") ||
		!strings.Contains(err.Error(), "the catalog at etcd://127.0.0.1:1 is not the one this host mounted") {
		t.Fatalf("a revision below the floor: %v", err)
	}
	if b.wctx.Err() == nil {
		t.Error("the watches' context did not end")
	}
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xdef, Revision: 1}, b.floor())
	if n := strings.Count(log.String(), "is not the one this host mounted"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, log.String())
	}
	if _, err := b.Get(context.Background(), "k"); !errors.Is(err, kv.ErrReplaced) {
		t.Errorf("Get after: %v, want ErrReplaced", err)
	}
	if _, err := b.Commit(context.Background(), &kv.Batch{}); !errors.Is(err, kv.ErrReplaced) {
		t.Errorf("Commit after: %v, want ErrReplaced", err)
	}
	if err := b.Probe(context.Background()); !errors.Is(err, kv.ErrReplaced) {
		t.Errorf("Probe after: %v, want ErrReplaced", err)
	}
}

// TestNoteHeaderClusterID: an answer of another cluster id (any answer: a
// watch's too) makes the catalog replaced, naming both ids.
func TestNoteHeaderClusterID(t *testing.T) {
	b, _ := headerBackend(t)
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0, Revision: 5}, 0) // no id: not judged
	if err := b.Replaced(); err != nil {
		t.Fatal(err)
	}
	b.noteHeader(&etcdserverpb.ResponseHeader{ClusterId: 0xdef, Revision: 5}, 0)
	err := b.Replaced()
	if !errors.Is(err, kv.ErrReplaced) || !strings.Contains(err.Error(), "0000000000000def") || !strings.Contains(err.Error(), "0000000000000abc") {
		t.Fatalf("another cluster id: %v", err)
	}
}
