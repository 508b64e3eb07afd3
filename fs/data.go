package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// dataNode is image.vhd (scratch nil; also under the name a writer
// created it as, store.DataAlias), or a scratch file (temporary name) in
// the image directory. A scratch file renamed onto image.vhd or another
// name that is not temporary serves as the image's data until the kernel
// looks the name up again.
type dataNode struct {
	node
	scratch *store.Upload
}

var _ = (gofs.NodeGetattrer)((*dataNode)(nil))
var _ = (gofs.NodeSetattrer)((*dataNode)(nil))
var _ = (gofs.NodeOpener)((*dataNode)(nil))
var _ = (gofs.NodeGetxattrer)((*dataNode)(nil))
var _ = (gofs.NodeSetxattrer)((*dataNode)(nil))
var _ = (gofs.NodeListxattrer)((*dataNode)(nil))
var _ = (gofs.NodeRemovexattrer)((*dataNode)(nil))

func (f *FS) dataInode(ctx context.Context, parent *gofs.Inode, im *store.Image, out *fuse.EntryOut) *gofs.Inode {
	n := &dataNode{node: node{fsys: f, id: im.ID}}
	n.fillDataAttr(im, &out.Attr)
	if im.Status.Sealed() {
		out.SetEntryTimeout(cacheTimeout)
		if out.Attr.Mode&0o222 == 0 { // fillDataAttr: 0644 while provisional
			out.SetAttrTimeout(cacheTimeout) // sealed attributes never change
		}
	} else {
		// An upload's entry goes when the upload is killed
		// (store.DataVisible): not cached.
		out.SetEntryTimeout(uncached)
	}
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: im.Ino(store.SlotData)})
}

func (f *FS) scratchInode(ctx context.Context, parent *gofs.Inode, im *store.Image, u *store.Upload, out *fuse.EntryOut) *gofs.Inode {
	n := &dataNode{node: node{fsys: f, id: im.ID}, scratch: u}
	n.fillDataAttr(im, &out.Attr)
	out.SetEntryTimeout(uncached)
	out.SetAttrTimeout(uncached)
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: im.Ino(u.Slot())})
}

// isScratch reports whether this node is a scratch file not (yet) renamed
// onto image.vhd.
func (n *dataNode) isScratch() bool {
	return n.scratch != nil && !n.scratch.IsImageData()
}

// fillDataAttr fills size, blocks, mode and owner: sealed data is 0444,
// its size is the record's and its blocks those the data file occupies
// (fewer than the size where it has holes: du, and sparse-aware tools,
// see them); an upload in progress is 0644 with the staged size.
func (n *dataNode) fillDataAttr(im *store.Image, a *fuse.Attr) {
	n.fillDataAttrFile(im, a, nil)
}

// fillDataAttrFile is fillDataAttr with the data file open as f (nil:
// not open).
func (n *dataNode) fillDataAttrFile(im *store.Image, a *fuse.Attr, f *os.File) {
	n.fillAttr(im, a)
	a.Nlink = 1
	var size int64
	blocks := int64(-1)
	switch {
	case n.isScratch():
		size = n.scratch.Size()
		a.Mode = syscall.S_IFREG | 0o644
		if n.scratch.Removed() {
			a.Nlink = 0 // fstat of an open file that was removed or renamed over
		}
	case im.Status.Sealed():
		size = im.Size
		a.Mode = syscall.S_IFREG | 0o444
		if n.fsys.st.Provisional(n.id) {
			// Its writer may still open it again (qemu-img): let the
			// kernel's permission check pass that open to the store.
			a.Mode = syscall.S_IFREG | 0o644
		}
		a.Nlink = 2 // images/<name>/image.vhd and by-id/<id>/image.vhd
		var st syscall.Stat_t
		if f != nil && syscall.Fstat(int(f.Fd()), &st) == nil {
			blocks = st.Blocks
		} else if b, err := n.fsys.st.DataBlocks(im.ID); err == nil {
			blocks = b
		}
	default:
		// Only images/<name>/ shows an upload (store.DataVisible).
		if u := n.fsys.st.CurrentUpload(n.id); u != nil {
			size = u.Size()
		}
		a.Mode = syscall.S_IFREG | 0o644
	}
	a.Size = uint64(size)
	if blocks < 0 {
		blocks = (size + 511) / 512
	}
	a.Blocks = uint64(blocks)
	a.Blksize = 1 << 20
}

// renamed reports whether this node is a scratch file that was renamed
// onto image.vhd: the name now leads to the image's own data inode.
func (n *dataNode) renamed() bool {
	return n.scratch != nil && n.scratch.IsImageData()
}

func (n *dataNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	im := n.imageFor(ctx)
	if h, ok := f.(*sealedHandle); ok && im == nil {
		// fstat of data opened before the image was deleted (or before
		// the caller's access was revoked): the reader keeps its file,
		// as it was at open.
		n.fillDataAttr(h.im, &out.Attr)
		if n.fsys.st.Get(n.id) == nil {
			out.Nlink = 0 // no links left
		}
		return 0
	}
	if im == nil {
		return syscall.ENOENT
	}
	if n.renamed() && n.fsys.byPath(ctx, f) {
		// stat(2) through a kernel entry that still maps image.vhd to
		// the scratch inode: ESTALE makes the kernel look the name up
		// again (LOOKUP_REVAL) and retry with the image's inode.
		return syscall.ESTALE
	}
	var df *os.File // the open data file: its blocks, without a path lookup
	if h, ok := f.(*sealedHandle); ok {
		df = h.f
	}
	n.fillDataAttrFile(im, &out.Attr, df)
	if n.scratch == nil && im.Status.Sealed() && out.Mode&0o222 == 0 {
		out.SetTimeout(cacheTimeout) // not while the seal is provisional
	}
	return 0
}

// Setattr: the store decides (Store.SetDataAttr): truncate through a
// write descriptor or of a scratch file changes its staged data; a
// truncate(2) by path changes the staged data of the upload in progress
// without sealing it; after sealing every change is EPERM, root included.
// Before sealing, mode, owner and time changes are accepted and ignored
// (cp -p, rsync -t).
func (n *dataNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a store.AttrChange
	if size, ok := in.GetSize(); ok {
		a = store.AttrChange{HasSize: true, Size: int64(size)}
	}
	u := n.scratch
	if isUpload(f) {
		u = f.(*uploadHandle).u
	}
	if err := n.fsys.st.SetDataAttr(caller(ctx), n.id, u, a); err != nil {
		return toErrno(err)
	}
	im := n.image()
	if im == nil {
		return syscall.ENOENT
	}
	n.fillDataAttr(im, &out.Attr)
	out.SetTimeout(uncached)
	return 0
}

func isUpload(f gofs.FileHandle) bool {
	h, ok := f.(*uploadHandle)
	return ok && h.write
}

func (n *dataNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	c := caller(ctx)
	trunc := flags&syscall.O_TRUNC != 0
	// O_TRUNC truncates whatever the access mode (ATOMIC_O_TRUNC brings
	// it here): O_RDONLY|O_TRUNC is a write like any other, EPERM on
	// sealed data.
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY || trunc
	st := n.fsys.st
	if n.renamed() {
		return nil, 0, syscall.ESTALE // as in Getattr: open retries with the image's inode
	}
	if n.isScratch() {
		var err error
		if write {
			err = st.Reopen(c, n.scratch, trunc)
		} else {
			err = st.OpenUploadRead(c, n.scratch) // unsealed: the owner's only
		}
		if err != nil {
			return nil, 0, toErrno(err)
		}
		return &uploadHandle{st: st, u: n.scratch, write: write, opener: callerProcess(ctx), node: &n.Inode}, fuse.FOPEN_DIRECT_IO, 0
	}
	if write {
		w := store.Writer{PID: callerProcess(ctx), ReadWrite: flags&syscall.O_ACCMODE == syscall.O_RDWR}
		u, err := st.OpenWriteBy(c, n.id, trunc, w)
		if err != nil {
			return nil, 0, toErrno(err)
		}
		return &uploadHandle{st: st, u: u, write: true, opener: w.PID, node: &n.Inode}, fuse.FOPEN_DIRECT_IO, 0
	}
	im := n.image()
	f, err := st.OpenReadBy(c, n.id, func() uint32 { return callerProcess(ctx) })
	if err != nil {
		return nil, 0, toErrno(err)
	}
	// Readers have nothing to do at close: no FLUSH request
	// (FOPEN_NOFLUSH, in every case of backings.open).
	h := &sealedHandle{f: f, im: im}
	flags, release := n.fsys.backings.open(ctx, n.id, int(f.Fd()))
	h.release = release
	return h, flags, 0
}

// sealedHandle reads sealed data. Where the kernel offers passthrough it
// reads the backing file itself and Read is never called.
type sealedHandle struct {
	f  *os.File
	im *store.Image // the record at open: fstat works after a delete
	// release gives back the handle's reference to the image's
	// passthrough backing file (passthrough.go); nil without one.
	release func()
}

var _ = (gofs.FileReader)((*sealedHandle)(nil))
var _ = (gofs.FileReleaser)((*sealedHandle)(nil))
var _ = (gofs.FileLseeker)((*sealedHandle)(nil))

func (h *sealedHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(h.f.Fd(), off, len(dest)), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE (the kernel handles the other
// whences itself) from the data file, whose holes are those of the
// upload: sparse-aware tools (cp --sparse=auto, qemu-img map and convert,
// rsync -S) skip the holes of a mostly empty image. Errors as lseek(2)'s:
// ENXIO past the end or when no data follows.
func (h *sealedHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	// The descriptor's own offset does not matter: Read uses pread.
	n, err := syscall.Seek(int(h.f.Fd()), int64(off), int(whence))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint64(n), 0
}

// Fsync has nothing to do: sealed data is durable.
func (h *sealedHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (h *sealedHandle) Release(ctx context.Context) syscall.Errno {
	if h.release != nil {
		h.release()
	}
	return toErrno(h.f.Close())
}

// uploadHandle reads and writes a staged upload (image.vhd or a scratch
// file). Closing the last write handle of image.vhd seals the upload
// (store.CloseWriter), so close(2) returns after the status is final.
type uploadHandle struct {
	st     *store.Store
	u      *store.Upload
	write  bool
	opener uint32      // process (thread group) that opened the handle
	node   *gofs.Inode // the file's inode
	once   sync.Once
}

var _ = (gofs.FileReader)((*uploadHandle)(nil))
var _ = (gofs.FileWriter)((*uploadHandle)(nil))
var _ = (gofs.FileFlusher)((*uploadHandle)(nil))
var _ = (gofs.FileReleaser)((*uploadHandle)(nil))
var _ = (gofs.FileFsyncer)((*uploadHandle)(nil))

func (h *uploadHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.u.ReadAt(dest, off)
	if n > 0 || isEOF(err) {
		return fuse.ReadResultData(dest[:n]), 0
	}
	return nil, toErrno(err)
}

func (h *uploadHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.write {
		return 0, syscall.EBADF
	}
	n, err := h.u.WriteAt(data, off)
	return uint32(n), toWriteErrno(err)
}

// Flush seals when the process that opened the file closes it, unless
// it still holds another descriptor of the file (holdsFile). A child
// that inherited the descriptor (the writers of a shell redirection)
// closing its copy does not end the upload; if the opener closed first,
// the last Release seals.
//
// For a scratch file the opener's close ends this handle's writing: it
// is counted out now, not at RELEASE, which the kernel sends only after
// close(2) has returned. Otherwise a rename onto image.vhd right after the
// close (rsync's receiver, a Go program) could still see a writer and
// leave the image queued until the RELEASE arrived.
func (h *uploadHandle) Flush(ctx context.Context) syscall.Errno {
	if !h.write || callerProcess(ctx) != h.opener {
		return 0
	}
	if !h.u.IsImageData() {
		var err error
		h.once.Do(func() { err = h.st.EndWriter(h.u) })
		return toErrno(err)
	}
	if h.node != nil && holdsFile(ctx, h.node) {
		// The opener closed a copy of its descriptor (dash's dup2 back
		// after a redirected command, os.close(os.dup(fd))) and still
		// writes through another: its last close, or the RELEASE, seals.
		return 0
	}
	// A writer killed mid-copy (SIGKILL), or exiting with a failure
	// status, closes its files as it exits: its upload is incomplete,
	// whatever the bytes look like.
	err := h.st.CloseWriterExiting(h.u, exitStatus(ctx))
	if h.node != nil {
		// A seal or a kill changes the mode and size: drop the attributes
		// the kernel fetched before the close (it keeps even "uncached"
		// ones for a jiffy or two), so that a stat right after close(2)
		// sees 0444. Without this rsync --inplace -p --chmod=F444 could
		// see the old 0644, chmod the sealed file and exit 23.
		//
		// Its pages too: a read-write writer that read its provisional
		// seal (qemu-img's probe) and then reopened and rewrote it must
		// leave no stale page behind for the next reader.
		h.node.NotifyContent(0, 0)
	}
	return toErrno(err)
}

func (h *uploadHandle) Release(ctx context.Context) syscall.Errno {
	if !h.write {
		return 0
	}
	var err error
	h.once.Do(func() { err = h.st.EndWriter(h.u) })
	return toErrno(err)
}

func (h *uploadHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return toErrno(h.u.Sync())
}

func isEOF(err error) bool { return err == nil || errors.Is(err, io.EOF) }
