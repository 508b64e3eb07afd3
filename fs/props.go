package fs

import (
	"context"
	"log/slog"
	"strings"
	"sync"
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
	im := d.image()
	if im == nil {
		return syscall.ENOENT
	}
	d.fillAttr(im, &out.Attr)
	out.Mode = syscall.S_IFDIR | modeFor(im, 0o755)
	out.Nlink = 2
	// Not cached: a visibility change through a property file or an xattr
	// changes the mode (0700 <-> 0755), and ls -l must show it at once.
	out.SetTimeout(uncached)
	return 0
}

func (d *propsDir) propInode(ctx context.Context, im *store.Image, key string, out *fuse.EntryOut) *gofs.Inode {
	p := &propNode{node: node{fsys: d.fsys, id: d.id}, key: key}
	p.fillPropAttr(im, &out.Attr)
	out.SetAttrTimeout(uncached)
	out.SetEntryTimeout(uncached)
	return d.NewInode(ctx, p, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: im.PropertyIno(key)})
}

func (d *propsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.image()
	if im == nil {
		return nil, syscall.ENOENT
	}
	if _, ok := im.Property(name); !ok {
		return nil, syscall.ENOENT
	}
	return d.propInode(ctx, im, name, out), 0
}

func (d *propsDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	im := d.image()
	if im == nil {
		return nil, syscall.ENOENT
	}
	keys := im.Keys()
	ents := make([]fuse.DirEntry, len(keys))
	for i, k := range keys {
		ents[i] = fuse.DirEntry{Name: k, Ino: im.PropertyIno(k), Mode: syscall.S_IFREG}
	}
	return gofs.NewListDirStream(ents), 0
}

// Create adds a custom property with an empty value; the writes that
// follow set it when the file is closed.
func (d *propsDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	c := caller(ctx)
	if err := d.fsys.st.SetProperty(c, d.id, name, "", store.SetCreate); err != nil {
		return nil, nil, 0, toErrno(err)
	}
	im := d.image()
	if im == nil {
		return nil, nil, 0, syscall.ENOENT
	}
	ch := d.propInode(ctx, im, name, out)
	return ch, &propHandle{fsys: d.fsys, st: d.fsys.st, c: c, id: d.id, key: name, write: true, created: true}, fuse.FOPEN_DIRECT_IO, 0
}

func (d *propsDir) Unlink(ctx context.Context, name string) syscall.Errno {
	return toErrno(d.fsys.st.RemoveProperty(caller(ctx), d.id, name))
}

// Rename of a file onto a key within properties/ sets the key to the
// file's value and removes the file (sed -i, write-temp-then-rename).
func (d *propsDir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*propsDir)
	if !ok || np.id != d.id || flags != 0 {
		return syscall.EPERM
	}
	return toErrno(d.fsys.st.RenameProperty(caller(ctx), d.id, name, newName))
}

// propNode is one property file: its content is the value and a newline.
type propNode struct {
	node
	key string
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
	if store.IsSystemKey(p.key) {
		a.Mode = syscall.S_IFREG | 0o444
	}
}

func (p *propNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	im := p.image()
	if im == nil {
		return syscall.ENOENT
	}
	if _, ok := im.Property(p.key); !ok {
		return syscall.ENOENT
	}
	p.fillPropAttr(im, &out.Attr)
	out.SetTimeout(uncached)
	return 0
}

// Setattr: truncate sets the value to its first size bytes; other
// changes are refused on system properties and ignored on the rest.
func (p *propNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	c := caller(ctx)
	if err := p.fsys.st.CheckSet(c, p.id, p.key); err != nil {
		return toErrno(err)
	}
	if size, ok := in.GetSize(); ok {
		if h, ok := f.(*propHandle); ok && h.write {
			h.truncate(int(size))
		} else {
			im := p.image()
			if im == nil {
				return syscall.ENOENT
			}
			v, _ := im.Property(p.key)
			v += "\n"
			if int(size) < len(v) {
				v = v[:size]
			}
			if err := p.fsys.setProperty(c, p.id, p.key, stripNewline(v), store.SetAny); err != nil {
				return toErrno(err)
			}
		}
	}
	return p.Getattr(ctx, f, out)
}

func (p *propNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	im := p.image()
	if im == nil {
		return nil, 0, syscall.ENOENT
	}
	v, ok := im.Property(p.key)
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	h := &propHandle{fsys: p.fsys, st: p.fsys.st, c: caller(ctx), id: p.id, key: p.key}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := p.fsys.st.CheckSet(h.c, p.id, p.key); err != nil {
			return nil, 0, toErrno(err)
		}
		h.write = true
		if flags&syscall.O_TRUNC != 0 {
			h.dirty = true
			return h, fuse.FOPEN_DIRECT_IO, 0
		}
	}
	h.buf = []byte(v + "\n")
	if !h.write {
		// A reader's close has nothing to do: no FLUSH request (one
		// round trip less per file for grep over properties/).
		return h, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// stripNewline removes the one trailing newline that echo adds.
func stripNewline(v string) string { return strings.TrimSuffix(v, "\n") }

// propHandle buffers a property file: reads see the value at open, writes
// build a new value that is set when the file is closed (flush), so the
// close reports a value the rules refuse.
type propHandle struct {
	fsys  *FS
	st    *store.Store
	c     store.Caller
	id    string
	key   string
	write bool

	mu    sync.Mutex
	buf   []byte
	dirty bool // the buffer differs from what was last set
	// written: data was written since the value was last set. A close
	// without writes (the shell closing its copy of a truncated file
	// before echo writes) sets nothing; Release sets a truncation alone.
	written bool
	// tooBig: a write went past the longest value; the close reports
	// E2BIG and sets nothing (not the part written before).
	tooBig bool
	// created: this handle created the property (an empty value);
	// refused: a write was refused. Release removes a property that was
	// created and never got a value.
	created, refused, set bool
}

var _ = (gofs.FileReader)((*propHandle)(nil))
var _ = (gofs.FileWriter)((*propHandle)(nil))
var _ = (gofs.FileFlusher)((*propHandle)(nil))
var _ = (gofs.FileReleaser)((*propHandle)(nil))
var _ = (gofs.FileFsyncer)((*propHandle)(nil))

func (h *propHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= int64(len(h.buf)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, h.buf[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *propHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	end := off + int64(len(data))
	if end > store.MaxValueBytes+1 {
		h.tooBig = true
		return 0, syscall.E2BIG
	}
	buf := h.buf
	if end > int64(len(buf)) {
		buf = append(buf, make([]byte, end-int64(len(buf)))...)
	}
	copy(buf[off:], data)
	// A write that completes a line (echo's) is checked now, so that the
	// writer sees EINVAL even where the shell ignores close errors.
	if buf[len(buf)-1] == '\n' {
		if err := h.st.CheckProperty(h.c, h.id, h.key, stripNewline(string(buf))); err != nil {
			h.refused = true
			slog.Warn("property write refused", "id", h.id, "key", h.key, "uid", h.c.UID, "err", err)
			return 0, toErrno(err)
		}
	}
	h.buf = buf
	h.dirty, h.written = true, true
	return uint32(len(data)), 0
}

func (h *propHandle) truncate(size int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if size < len(h.buf) {
		h.buf = h.buf[:size]
	} else {
		h.buf = append(h.buf, make([]byte, size-len(h.buf))...)
	}
	h.dirty = true
}

func (h *propHandle) Flush(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refused || h.tooBig {
		// A refused write leaves the value as it was: not truncated, and
		// a property this handle created with no value is removed again.
		if h.created && !h.set {
			h.created = false
			h.st.RemoveProperty(h.c, h.id, h.key)
		}
		if h.tooBig {
			return syscall.E2BIG
		}
		return 0
	}
	if !h.written {
		return 0
	}
	errno := h.commit()
	if errno != 0 && h.created && !h.set {
		h.created = false
		h.st.RemoveProperty(h.c, h.id, h.key)
	}
	return errno
}

// Fsync sets what was written so far (an editor's write, fsync, close).
func (h *propHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.written || h.refused || h.tooBig {
		return 0
	}
	return h.commit()
}

// Release sets a value that was truncated but never written (": > f")
// and removes a property this handle created but never gave a value.
func (h *propHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refused || h.tooBig {
		return 0 // handled at Flush
	}
	return h.commit()
}

// commit sets the buffered value if it changed. Must hold h.mu.
func (h *propHandle) commit() syscall.Errno {
	if !h.write || !h.dirty {
		return 0
	}
	h.dirty, h.written = false, false
	if h.tooBig {
		return syscall.E2BIG
	}
	errno := toErrno(h.fsys.setProperty(h.c, h.id, h.key, stripNewline(string(h.buf)), store.SetAny))
	h.set = h.set || errno == 0
	return errno
}
