package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// propsDir is <image>/properties/: one file per property. Creating a file
// adds a custom property, removing one deletes it.
type propsDir struct {
	node
}

var _ = (gofs.NodeLookuper)((*propsDir)(nil))
var _ = (gofs.NodeReaddirer)((*propsDir)(nil))
var _ = (gofs.NodeGetattrer)((*propsDir)(nil))
var _ = (gofs.NodeCreater)((*propsDir)(nil))
var _ = (gofs.NodeUnlinker)((*propsDir)(nil))
var _ = (gofs.NodeRenamer)((*propsDir)(nil))

func (d *propsDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	im := d.imageFor(ctx)
	if im == nil {
		if g := d.fsys.ghostFor(ctx, d.id); g != nil {
			d.ghostDirAttr(g, &out.Attr) // see delete.go
			out.SetTimeout(uncached)
			return 0
		}
		return syscall.ENOENT
	}
	d.fillAttr(im, &out.Attr)
	out.Mode = syscall.S_IFDIR | modeFor(im, 0o755)
	out.Nlink = 2
	// A visibility change changes the mode (0700 <-> 0755): invalidate
	// drops it then, so ls -l shows it at once.
	out.SetTimeout(untilChanged)
	return 0
}

func (d *propsDir) propInode(ctx context.Context, im *store.Image, key string, out *fuse.EntryOut) *gofs.Inode {
	p := &propNode{node: node{fsys: d.fsys, id: d.id}, key: key}
	p.fillPropAttr(im, &out.Attr)
	out.SetAttrTimeout(untilChanged)
	out.SetEntryTimeout(untilChanged)
	return d.NewInode(ctx, p, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: im.PropertyIno(key)})
}

func (d *propsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.imageFor(ctx)
	if im == nil {
		return nil, syscall.ENOENT
	}
	if _, ok := im.Property(name); !ok {
		return nil, syscall.ENOENT
	}
	return d.propInode(ctx, im, name, out), 0
}

func (d *propsDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	im := d.imageFor(ctx)
	if im == nil {
		if d.fsys.ghostFor(ctx, d.id) != nil {
			return withDots(&d.Inode, nil), 0 // see delete.go
		}
		return nil, syscall.ENOENT
	}
	keys := im.Keys()
	ents := make([]fuse.DirEntry, len(keys))
	for i, k := range keys {
		ents[i] = fuse.DirEntry{Name: k, Ino: im.PropertyIno(k), Mode: syscall.S_IFREG}
	}
	return withDots(&d.Inode, ents), 0
}

// Create opens a new custom property and commits nothing: the property
// appears with its value, in one commit, when the file is flushed
// (closed) or fsynced after a write, or when it is released without one
// (touch, ": >": an empty value), and a crash before that leaves no trace
// of it. Every rule of a new key (owner, key, quota, free space) is
// checked here, so the open fails with the errno the commit would.
// Until the commit the file exists only in this handle: the writer's fd
// works (fstat, write, ftruncate), while lookups of the name answer
// ENOENT (the entry and attributes are not cached). With O_EXCL the
// commit is a SetCreate, refused with EEXIST if another writer (or host)
// created the key meanwhile; without it, it overwrites that key (the last
// writer wins, no error).
func (d *propsDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	w, err := d.fsys.st.CreatePropertyWrite(caller(ctx), d.id, name, flags&syscall.O_EXCL != 0)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	im := d.image()
	if im == nil {
		return nil, nil, 0, syscall.ENOENT
	}
	w.OnCommit = d.fsys.propertyChanged
	// Not the key's inode (PropertyIno), which the commit assigns: an
	// inode of its own (go-fuse numbers it), which the next lookup after
	// the commit replaces.
	p := &propNode{node: node{fsys: d.fsys, id: d.id}, key: name}
	h := &propHandle{fsys: d.fsys, st: d.fsys.st, id: d.id, key: name, node: p, kind: propWriter, w: w}
	p.creating = h
	h.attr(im, &out.Attr)
	out.SetAttrTimeout(uncached)
	out.SetEntryTimeout(uncached)
	return d.NewInode(ctx, p, gofs.StableAttr{Mode: syscall.S_IFREG}), h, fuse.FOPEN_DIRECT_IO, 0
}

func (d *propsDir) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := d.fsys.refusedFor(ctx, d.id); errno != 0 {
		return errno // rm -r goes on after a refused delete (delete.go)
	}
	im := d.fsys.st.Get(d.id)
	if im == nil && d.fsys.ghostFor(ctx, d.id) != nil {
		return 0 // went with the image the caller deleted (delete.go)
	}
	if im != nil && name == store.KeyID && im.DataName() == "" {
		// An image with no data file yet (created through the Images API
		// without formats): rm -r and find -delete reach properties/
		// first, and id is its first entry. Its unlink by a process that
		// holds the image directory open is the delete of the image, as
		// the unlink of image.vhd is otherwise (delete.go); before any
		// custom property is removed, so nothing is half-deleted.
		if _, parent := d.Parent(); parent != nil {
			if idir, ok := parent.Operations().(*imageDir); ok && idir.heldByCaller(ctx) {
				return idir.deleteByUnlink(ctx)
			}
		}
	}
	return toErrno(d.fsys.st.RemoveProperty(caller(ctx), d.id, name))
}

// Rename of a file onto a key within properties/ sets the key to the
// file's value and removes the file (sed -i, write-temp-then-rename).
// RENAME_NOREPLACE (mv to a new name) is honoured; RENAME_EXCHANGE is not
// supported (EINVAL). A value or key the new key's rule refuses is EPERM,
// not EINVAL (toRenamePropertyErrno).
func (d *propsDir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	mode, errno := renameWithin(d, newParent, flags)
	if errno != 0 {
		return errno
	}
	if err := d.fsys.st.RenameProperty(caller(ctx), d.id, name, newName, mode); err != nil {
		return toRenamePropertyErrno(err)
	}
	if ch := d.GetChild(name); ch != nil {
		if p, ok := ch.Operations().(*propNode); ok {
			// The kernel moves this inode to newName, whose file is
			// another inode: see propNode.moved. Its attributes go, so
			// that stat asks Getattr.
			p.moved.Store(true)
			ch.NotifyContent(-1, 0)
		}
	}
	return 0
}

// propNode is one property file: its content is the value and a newline.
type propNode struct {
	node
	key string
	// moved: this file was renamed (propsDir.Rename). The kernel's entry
	// of the new name leads here until it is looked up again, but the
	// new name's file is another inode (PropertyIno): Getattr and Open by
	// path answer ESTALE, which makes the kernel look it up again.
	moved atomic.Bool

	// creating: the handle of propsDir.Create that made this inode; the
	// property exists once it committed (nil for a looked-up inode).
	creating *propHandle

	// served is the value the kernel's pages were last filled with, by a
	// read or by cacheForOpen (servedOK: they were, since they were last
	// dropped). An open whose value differs replaces them: invalidate
	// reaches only inodes under a directory the kernel knows.
	mu       sync.Mutex
	served   string
	servedOK bool
}

var _ = (gofs.NodeGetattrer)((*propNode)(nil))
var _ = (gofs.NodeSetattrer)((*propNode)(nil))
var _ = (gofs.NodeOpener)((*propNode)(nil))

func (p *propNode) fillPropAttr(im *store.Image, a *fuse.Attr) {
	p.fillAttr(im, a)
	v, _ := im.Property(p.key)
	a.Size = uint64(len(v) + 1)
	a.Blocks = (a.Size + 511) / 512
	a.Nlink = 1
	a.Mode = syscall.S_IFREG | 0o644
	if im.Fixed(p.key) {
		a.Mode = syscall.S_IFREG | 0o444
	}
	if store.OthersWrite(p.key) {
		a.Mode = syscall.S_IFREG | 0o666 // members write their own status
	}
}

func (p *propNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	byPath := p.fsys.byPath(ctx, f)
	if byPath && p.moved.Load() {
		return syscall.ESTALE
	}
	im := p.imageFor(ctx)
	if im == nil {
		return syscall.ENOENT
	}
	if h := p.creator(f); h != nil {
		h.attr(im, &out.Attr) // fstat of a file Create made, not yet set
		return 0
	}
	if _, ok := im.Property(p.key); !ok {
		if byPath {
			return syscall.ESTALE // see propNode.Open
		}
		return syscall.ENOENT
	}
	p.fillPropAttr(im, &out.Attr)
	out.SetTimeout(untilChanged)
	if h, ok := f.(*propHandle); ok && h.w != nil {
		// fstat of a file being written: the size of what the close will
		// set, not cached.
		if size, dirty := h.w.Pending(); dirty {
			out.Size, out.Blocks = uint64(size), uint64(size+511)/512
			out.SetTimeout(uncached)
		}
	}
	return 0
}

// Setattr: truncate sets the value to its first size bytes (through a
// writer's handle, or of a file Create made and not committed yet: at
// its close); other changes are refused on system properties and ignored
// on the rest (Store.SetPropertyFileAttr).
func (p *propNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a store.AttrChange
	if size, ok := in.GetSize(); ok {
		a = store.AttrChange{HasSize: true, Size: int64(size)}
	}
	var w *store.PropertyWrite
	if h, ok := f.(*propHandle); ok && h.w != nil {
		w = h.w
	} else if h := p.creator(f); h != nil {
		w = h.w
	}
	ch, err := p.fsys.st.SetPropertyFileAttr(caller(ctx), p.id, p.key, w, a)
	if err != nil {
		return toErrno(err)
	}
	p.fsys.propertyChanged(ch)
	return p.Getattr(ctx, f, out)
}

func (p *propNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if p.moved.Load() {
		return nil, 0, syscall.ESTALE
	}
	im := p.imageFor(ctx)
	if im == nil {
		return nil, 0, syscall.ENOENT
	}
	v, ok := im.Property(p.key)
	if !ok {
		// The kernel's entry outlived the property (removed under the
		// other tree, or through an xattr, and invalidate's entry
		// notification has not run yet): ESTALE makes the kernel look
		// the name up again (LOOKUP_REVAL), find it gone, and an
		// O_CREAT open create it anew.
		return nil, 0, syscall.ESTALE
	}
	c := caller(ctx)
	h := &propHandle{fsys: p.fsys, st: p.fsys.st, id: p.id, key: p.key, node: p, kind: propReader}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		w, err := p.fsys.st.OpenPropertyWrite(c, p.id, p.key, flags&syscall.O_TRUNC != 0)
		if err != nil {
			return nil, 0, toErrno(err)
		}
		w.OnCommit = p.fsys.propertyChanged
		h.kind, h.w = propWriter, w
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	h.atOpen = []byte(v + "\n")
	if !c.Owns(im) {
		// The kernel's pages of this file are shared by every user, and
		// the owner's opens fill them with the current value: a reader
		// whose access can be revoked (a member, anyone of a public
		// image) reads past them, so that each read asks Read, which
		// checks the reader's access. KEEP_CACHE: the open leaves the
		// owner's pages in place.
		h.kind = propDirectReader
		return h, fuse.FOPEN_NOFLUSH | fuse.FOPEN_DIRECT_IO | fuse.FOPEN_KEEP_CACHE, 0
	}
	// A reader goes through the page cache, kept across opens while
	// the value stays (invalidate drops it when it changes), and its
	// close has nothing to do: no FLUSH request. grep over
	// properties/ costs an OPEN (and a RELEASE the kernel does not
	// wait for) per file.
	return h, fuse.FOPEN_NOFLUSH | p.cacheForOpen(v), 0
}

// cacheForOpen makes the kernel's pages of this file hold value v and
// returns FOPEN_KEEP_CACHE; where it cannot, it returns 0 and the open
// drops the pages (the reads then ask Read). When the pages were last
// filled with v, they are kept as they are. Otherwise v is stored into
// them now (FUSE_NOTIFY_STORE), so the reader's first read needs no READ
// request, and the kernel does not drop the cached atime after it (which
// cost a GETATTR per file in the next grep).
func (p *propNode) cacheForOpen(v string) uint32 {
	p.mu.Lock()
	hit := p.servedOK && p.served == v
	p.mu.Unlock()
	if hit {
		// A change after v was read drops the pages itself.
		return fuse.FOPEN_KEEP_CACHE
	}
	// A change committed after the value is read may drop the pages
	// before they are stored (which would leave an older value in them
	// for every reader): the image's pageGate (notify.go) makes this
	// store drop them again if a change began meanwhile, and that
	// change's request reply wait for this store. No lock is held across
	// the store: it waits for reads of these pages in flight, and their
	// Read takes p.mu.
	gate := p.fsys.imageGate(p.id)
	at := gate.beginStore()
	errno := syscall.ENOENT
	var cur string
	if im := p.fsys.st.Get(p.id); im != nil {
		if v, ok := im.Property(p.key); ok {
			cur = v
			errno = p.WriteCache(0, []byte(cur+"\n"))
		}
	}
	gate.endStore(at, func() {
		p.NotifyContent(0, 0)
		errno = syscall.ESTALE
	})
	if errno != 0 {
		p.mu.Lock()
		p.servedOK = false
		p.mu.Unlock()
		return 0
	}
	p.mu.Lock()
	p.served, p.servedOK = cur, true // every page up to the end is cur's now
	p.mu.Unlock()
	return fuse.FOPEN_KEEP_CACHE
}

// serve records that a read through the page cache got value v.
func (p *propNode) serve(v string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.servedOK && p.served != v {
		// Pages of two values: let the next open drop them all.
		p.served = "\x00mixed"
		return
	}
	p.served, p.servedOK = v, true
}

// propHandle is an open property file. A reader reads the current value
// (through the page cache, which invalidate keeps current); once the
// property is gone it reads the value it had at open, as an unlinked file
// keeps its data. A writer's file is a store.PropertyWrite, which holds
// the protocol (check at the write, set at close, fsync and release) and
// its one state; the writer reads its own buffer.
type propHandle struct {
	fsys *FS
	st   *store.Store
	id   string
	key  string
	node *propNode
	kind propHandleKind
	// atOpen: a reader's value at open, with its newline.
	atOpen []byte
	// w: a writer's file (kind propWriter).
	w *store.PropertyWrite
}

// propHandleKind is how a property file was opened.
type propHandleKind uint8

const (
	propReader       propHandleKind = iota // through the page cache
	propDirectReader                       // past the page cache (propNode.Open)
	propWriter                             // for writing: w
)

// creator returns the open handle of propsDir.Create whose property is
// not committed yet, for a request on p with handle f (nil: by path, or
// futimens, which the kernel sends without the handle), or nil.
func (p *propNode) creator(f gofs.FileHandle) *propHandle {
	h, ok := f.(*propHandle)
	if !ok {
		h = p.creating
	}
	if h == nil || h.w == nil || !h.w.Uncommitted() {
		return nil
	}
	return h
}

// attr fills the attributes of a file Create made, before its commit:
// the image's owner and times, the size of the buffered value, mode 0644,
// not cached.
func (h *propHandle) attr(im *store.Image, a *fuse.Attr) {
	h.node.fillAttr(im, a)
	size, _ := h.w.Pending()
	a.Size = uint64(size)
	a.Blocks = (a.Size + 511) / 512
	a.Nlink = 1
	a.Mode = syscall.S_IFREG | 0o644
}

var _ = (gofs.FileReader)((*propHandle)(nil))
var _ = (gofs.FileWriter)((*propHandle)(nil))
var _ = (gofs.FileFlusher)((*propHandle)(nil))
var _ = (gofs.FileReleaser)((*propHandle)(nil))
var _ = (gofs.FileFsyncer)((*propHandle)(nil))

func (h *propHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.w != nil {
		return fuse.ReadResultData(dest[:h.w.ReadAt(dest, off)]), 0
	}
	// Pages filled from an older value would outlive the change that
	// dropped them (a read of an open file after the change).
	b := h.atOpen
	im := h.st.GetFor(caller(ctx), h.id)
	if im == nil && h.st.Get(h.id) != nil {
		return nil, syscall.ENOENT // the reader's access was revoked
	}
	if im != nil {
		if v, ok := im.Property(h.key); ok {
			if h.kind == propReader {
				h.node.serve(v)
			}
			b = []byte(v + "\n")
		}
	}
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(b[off:min(off+int64(len(dest)), int64(len(b)))]), 0
}

// Write: a write that completes a line (echo's) is checked now, so that
// the writer sees EINVAL even where the shell ignores close errors.
func (h *propHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.w == nil {
		return 0, syscall.EBADF
	}
	if err := h.w.WriteAt(data, off); err != nil {
		return 0, toWriteErrno(err)
	}
	return uint32(len(data)), 0
}

// Flush sets what was written (store.PropertyWrite.Close).
func (h *propHandle) Flush(ctx context.Context) syscall.Errno {
	if h.w == nil {
		return 0
	}
	return toErrno(h.w.Close())
}

// Fsync sets what was written so far (an editor's write, fsync, close).
func (h *propHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.w == nil {
		return 0
	}
	return toErrno(h.w.Sync())
}

// Release sets a value that was truncated but never written (": > f"),
// and the empty value of a property this handle created without a write
// (touch, ": >" of a new key).
func (h *propHandle) Release(ctx context.Context) syscall.Errno {
	if h.w == nil {
		return 0
	}
	return toErrno(h.w.End())
}

// setProperty sets a property through a property file or an xattr. A
// name change made that way (not by rename(2), which the kernel tracks
// itself) drops the kernel's entry of the old name, so images/<old> stops
// resolving at once.
func (f *FS) setProperty(c store.Caller, id, key, value string, mode store.SetMode) error {
	ch, err := f.st.ChangeProperty(c, id, key, value, mode)
	f.propertyChanged(ch)
	return err
}

// propertyChanged drops the kernel's entry of an image's old name after a
// property change that renamed it (ch, the store's commit, tells the old
// name; a zero Change: nothing changed).
func (f *FS) propertyChanged(ch store.Change) {
	if ch.Old != nil && ch.New != nil && ch.Old.Name != ch.New.Name {
		f.dropEntry(f.root().GetChild("images"), ch.Old.Name)
	}
}
