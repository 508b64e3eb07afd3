package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE passthrough of sealed data: the kernel reads the data file itself.
//
// The kernel allows one backing file per inode: an open that names another
// backing id than the one the inode's open files use fails with EIO. So
// imagefs keeps one backing id per image, registered at the first sealed
// open and closed when the last sealedHandle is released, counted by those
// handles only.
//
// It does not let go-fuse do it (sealedHandle does not implement
// gofs.FilePassthroughFder). go-fuse v2.12.1's rawBridge registers a
// backing id per inode and counts the handles opened with it, but its
// Release drops one reference for every handle released on the inode,
// including the upload's write handle, which never took one: a reader
// that opened between the seal and the writer's RELEASE (a child still
// held the writer's descriptor) kept its backing file, the RELEASE closed
// the backing id under it, and every later open registered a second
// backing file for the inode: EIO until that reader closed (issue 12,
// item 5).
//
// go-fuse's fs API gives Open no way to name a backing id, so
// passthroughRaw, a fuse.RawFileSystem wrapper, sets it in the OPEN reply.
// dataNode.Open hands the id over keyed by the request's cancel channel,
// which go-fuse passes unchanged to the node as fuse.Context.Cancel and
// which no other request in flight shares.
type backings struct {
	mu     sync.Mutex
	server backingServer // nil: passthrough unavailable
	state  passthroughState
	ids    map[string]*backing // by image id

	offers sync.Map // request cancel channel -> backing id (int32)
}

// backingServer is what *fuse.Server offers on Linux.
type backingServer interface {
	RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(int32) syscall.Errno
}

type passthroughState int

const (
	passthroughUntried passthroughState = iota // no registration tried yet
	passthroughOn                              // a registration succeeded
	passthroughOff                             // unavailable (no root, no kernel support)
)

// backing is one registered backing file: the kernel's id and how many
// sealedHandles use it.
type backing struct {
	id   int32
	refs int
}

// setServer enables passthrough through s when the kernel offers it.
func (b *backings) setServer(s *fuse.Server) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ids = map[string]*backing{}
	bs, ok := any(s).(backingServer)
	if !ok || s.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		b.state = passthroughOff
		return
	}
	b.server = bs
}

// open decides how a sealed open of image id, whose data file descriptor
// is fd, is served, and returns the open flags: passthrough (the backing
// id is offered to passthroughRaw for the request of ctx, and held until
// close is called), direct I/O through the daemon when passthrough works
// but not for this open (any cached open would make the kernel refuse the
// inode's passthrough opens), or cached reads through the daemon where
// passthrough is unavailable. close is nil when there is nothing to give
// back.
func (b *backings) open(ctx context.Context, id string, fd int) (flags uint32, close func()) {
	const cached = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	// Direct I/O is also what the reply says until passthroughRaw adds
	// the backing id: should it not, the reads still come right.
	const direct = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH
	fc, ok := ctx.(*fuse.Context)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == passthroughOff || b.server == nil {
		return cached, nil
	}
	if !ok || fc.Cancel == nil {
		return direct, nil
	}
	bk := b.ids[id]
	if bk == nil {
		bid, errno := b.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
		if errno != 0 {
			if b.state == passthroughUntried {
				b.state = passthroughOff // not root, or no kernel support
				return cached, nil
			}
			return direct, nil
		}
		b.state = passthroughOn
		bk = &backing{id: bid}
		b.ids[id] = bk
	}
	bk.refs++
	b.offers.Store(fc.Cancel, bk.id)
	var once sync.Once
	return direct, func() { once.Do(func() { b.release(id, bk) }) }
}

// release gives back one reference to bk, the backing of image id, and
// closes the backing id after the last one. The kernel sends RELEASE
// after the file stopped using its backing file, so no open file of the
// inode still needs the id then.
func (b *backings) release(id string, bk *backing) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk.refs--
	if bk.refs > 0 {
		return
	}
	if b.ids[id] == bk {
		delete(b.ids, id)
	}
	b.server.UnregisterBackingFd(bk.id)
}

// passthroughRaw puts the backing id that dataNode.Open offered for a
// request into its OPEN reply.
type passthroughRaw struct {
	fuse.RawFileSystem
	b *backings
}

func (p *passthroughRaw) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := p.RawFileSystem.Open(cancel, in, out)
	if v, ok := p.b.offers.LoadAndDelete(cancel); ok && st.Ok() {
		out.BackingID = v.(int32)
		out.OpenFlags &^= fuse.FOPEN_DIRECT_IO | fuse.FOPEN_KEEP_CACHE
		out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
	}
	return st
}
