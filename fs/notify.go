package fs

import (
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// Kernel notifications and locks. No lock of imagefs is held while a
// notification is sent: the kernel may make one wait, for page locks
// (NotifyContent with off >= 0 and WriteCache wait for the reads of those
// pages in flight) or for the lock of a directory (NotifyEntry and
// NotifyDelete take it, and the kernel holds it for the whole of an
// unlink, rename, create or rmdir in it, maybe the very request being
// served). invalidate and invalidateViews run on the goroutine of the
// request that changed the record (store.Store.OnChange, called with no
// store lock held), and work out what to drop from go-fuse's tree, whose
// own locks are released before they return. Entry notifications go
// through two goroutines per mount (entryNotifier): one for those sent
// after the reply (dropEntryLater), one for the others.

// dropEntryWait is how long dropEntry waits for the kernel.
const dropEntryWait = 100 * time.Millisecond

// entryQueueLen is how many entry notifications may wait for the
// notifier goroutine.
const entryQueueLen = 1024

// entryNote is one entry notification: name in dir. done, if not nil, is
// closed once it is sent.
type entryNote struct {
	dir  *gofs.Inode
	name string
	done chan struct{}
}

// entryNotifier sends the kernel's entry notifications of one mount, one
// at a time, from its own goroutine: a notification that waits for a
// directory lock the kernel holds for a request blocks that goroutine
// only, and the requests behind it in the queue wait for it at most
// dropEntryWait each. The queue holds entryQueueLen notifications; when
// it is full a notification is not sent (logged): the kernel keeps that
// entry until its timeout, or until the next change that drops it.
type entryNotifier struct {
	q chan entryNote
}

func newEntryNotifier() *entryNotifier {
	return &entryNotifier{q: make(chan entryNote, entryQueueLen)}
}

// run sends the queued notifications until done is closed.
func (e *entryNotifier) run(done <-chan struct{}) {
	for {
		select {
		case n := <-e.q:
			n.dir.NotifyEntry(n.name) // ENOENT: the kernel had no entry
			if n.done != nil {
				close(n.done)
			}
		case <-done:
			return
		}
	}
}

// queue hands n to the notifier goroutine; false when the queue is full.
func (e *entryNotifier) queue(n entryNote) bool {
	select {
	case e.q <- n:
		return true
	default:
		slog.Warn("entry notification queue full: the kernel keeps the entry until it expires",
			"name", n.name)
		return false
	}
}

// dropEntry drops the kernel's entry name in dir (nil: nothing), waiting
// for it up to dropEntryWait so that the request that made the change
// replies after it. The notification needs the lock of dir, which a
// request the caller's own request waits on may hold (rmdir images/X
// holds images/ and waits for X, which a setxattr on X holds while it
// waits for this reply): after dropEntryWait the reply goes out and the
// notification lands when dir is free.
func (f *FS) dropEntry(dir *gofs.Inode, name string) {
	if dir == nil {
		return
	}
	n := entryNote{dir: dir, name: name, done: make(chan struct{})}
	if !f.entries.queue(n) {
		return
	}
	t := time.NewTimer(dropEntryWait)
	defer t.Stop()
	select {
	case <-n.done:
	case <-t.C:
	}
}

// dropEntryLater drops the kernel's entry name in dir without waiting:
// for an entry in a directory whose lock the kernel may hold for the
// request being served (properties/ during an unlink, rename or create
// in it). It has a notifier of its own: the next dropEntry of that same
// request (a view's entry) is not queued behind it.
func (f *FS) dropEntryLater(dir *gofs.Inode, name string) {
	f.later.queue(entryNote{dir: dir, name: name})
}

// pageGate orders the page stores of opens (propNode.cacheForOpen)
// against the changes of the images of one slot (imageGate), with no
// lock held across a notification: mu guards the fields and is never
// held while the kernel is notified.
//
// A change counts itself (gen) before invalidate drops any page, and
// invalidate returns only once the stores that read their value before
// that count are done. A store whose count moved while it read and
// stored drops the pages again itself. So a store that read an older
// value lands before the change's drop, or is dropped before the change's
// request replies. The stores wait only for the page locks of reads in
// flight, and those reads wait for nothing of imagefs.
type pageGate struct {
	mu       sync.Mutex
	gen      uint64         // changes begun
	stores   map[uint64]int // stores in flight by the gen they began at
	storeEnd sync.Cond      // signalled when a store ends (L: mu)
}

// imageGate returns the gate of image id (one of a fixed set, by hash).
func (f *FS) imageGate(id string) *pageGate {
	h := fnv.New32a()
	h.Write([]byte(id))
	g := &f.pageGates[h.Sum32()%uint32(len(f.pageGates))]
	g.mu.Lock()
	if g.storeEnd.L == nil {
		g.storeEnd.L = &g.mu
		g.stores = map[uint64]int{}
	}
	g.mu.Unlock()
	return g
}

// change counts a change and returns its number (for waitStores).
func (g *pageGate) change() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen++
	return g.gen
}

// waitStores waits for the stores that began before change gen.
func (g *pageGate) waitStores(gen uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.storesBefore(gen) {
		g.storeEnd.Wait()
	}
}

func (g *pageGate) storesBefore(gen uint64) bool {
	for at, n := range g.stores {
		if at < gen && n > 0 {
			return true
		}
	}
	return false
}

// beginStore records a store in flight and returns the count it began at.
func (g *pageGate) beginStore() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stores[g.gen]++
	return g.gen
}

// endStore ends the store begun at count at; if a change began since
// (the pages may hold an older value) it calls drop first.
func (g *pageGate) endStore(at uint64, drop func()) {
	g.mu.Lock()
	moved := g.gen != at
	g.mu.Unlock()
	if moved {
		drop()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stores[at]--; g.stores[at] == 0 {
		delete(g.stores, at)
	}
	g.storeEnd.Broadcast()
}
