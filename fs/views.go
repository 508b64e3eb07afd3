package fs

import (
	"context"
	"hash/fnv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/layout"
	"github.com/imagefs/imagefs/store"
	"github.com/imagefs/imagefs/xattr"
)

// The filter views (../shared/docs/layout.md, "Filter views"):
//
//	by-property/                  the keys in use
//	  <key>/                      the values of key in use
//	    <escaped value>/          one symlink per image with key = value
//	      <image name> -> ../../../by-id/<id>
//
// Every listing and lookup is answered from the store's property index
// (store/index.go), so it costs time in proportion to what it lists, not
// to the catalog, and applies the caller's visibility as images/ does
// (store.Visible with ReachList): a private image of another user, its keys
// and its values never appear. Listings are never cached by the kernel (no
// directory cache). Entries and attributes are kept untilChanged, and
// viewcache.go drops them when an image leaves a view, so after a property
// changes the next ls shows the image under its new value only; with
// --allow-other only the entries every user sees (of public images) are
// cached: the kernel shares them between users. A listing is READDIRPLUS,
// one request per few dozen entries, after which ls -l finds every link's
// attributes in the kernel, and its target too (the mount caches
// symlinks: a link's target is its image's id and never changes).

// viewIno returns the inode number of a view directory: a hash of its
// path with the top bit set, so it never meets an image's range
// (InoBase | slot, far below 2^63).
func viewIno(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	ino := h.Sum64() | 1<<63
	if ino == ^uint64(0) {
		ino-- // reserved by go-fuse
	}
	return ino
}

// viewDirAttr fills the attributes of a view directory (read-only, owned
// by root, the mount's times) and keeps the kernel from caching them.
func (f *FS) viewDirAttr(a *fuse.Attr) {
	f.fixedDirAttr(a, 0o555)
}

// viewEntry sets the timeouts of a view's entry: the attributes are kept
// until changed (invalidateViews drops them); the entry too, unless other
// users use the mount (--allow-other) and the entry is not one every user
// sees (public: store.Anyone sees it). The kernel shares cached entries
// between users: the walks of the others must reach Lookup to have their
// own visibility applied.
func (f *FS) viewEntry(out *fuse.EntryOut, public bool) {
	out.SetAttrTimeout(untilChanged)
	if f.allowOther && !public {
		out.SetEntryTimeout(uncached)
	} else {
		out.SetEntryTimeout(untilChanged)
	}
}

// publicKey and publicValue report, on a mount with --allow-other,
// whether every user sees by-property/key (or key/value); false otherwise
// (the answer is not needed).
func (f *FS) publicKey(key string) bool {
	if !f.allowOther {
		return false
	}
	ok, err := f.st.ViewHasKey(store.Anyone, key, layout.Listed)
	return err == nil && ok
}

func (f *FS) publicValue(key, value string) bool {
	if !f.allowOther {
		return false
	}
	ok, err := f.st.ViewHasValue(store.Anyone, key, value)
	return err == nil && ok
}

// noXattr answers getxattr on a view directory or link: EOPNOTSUPP for
// names outside user.*, so that ls -l stops asking for security labels
// and ACLs after the first link (it asked once per link), and ENODATA for
// user.* (views carry no properties).
func noXattr(attr string) syscall.Errno {
	if _, ok := xattr.Key(attr); ok {
		return syscall.ENODATA
	}
	return syscall.EOPNOTSUPP
}

// viewXattr gives the view directories and links noXattr and no names.
type viewXattr struct{}

func (viewXattr) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, noXattr(attr)
}

func (viewXattr) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}

// byPropertyDir is by-property/: one directory per property key in use.
type byPropertyDir struct {
	gofs.Inode
	viewXattr
	fsys *FS
}

var _ = (gofs.NodeLookuper)((*byPropertyDir)(nil))
var _ = (gofs.NodeReaddirer)((*byPropertyDir)(nil))
var _ = (gofs.NodeGetattrer)((*byPropertyDir)(nil))

func (d *byPropertyDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.fixedDirAttr(&out.Attr, 0o755)
	return 0
}

func (d *byPropertyDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	keys, err := d.fsys.st.ViewKeys(caller(ctx), layout.Listed)
	if err != nil {
		return nil, toErrno(err)
	}
	ents := make([]fuse.DirEntry, 0, len(keys))
	for _, k := range keys {
		if layout.ListedKey(k) {
			ents = append(ents, fuse.DirEntry{Name: k, Ino: viewIno(k), Mode: syscall.S_IFDIR})
		}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *byPropertyDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ok, err := d.fsys.st.ViewHasKey(caller(ctx), name, layout.Listed)
	if err != nil {
		return nil, toErrno(err)
	}
	if !ok || !layout.ListedKey(name) {
		return nil, syscall.ENOENT
	}
	d.fsys.viewDirAttr(&out.Attr)
	d.fsys.viewEntry(out, d.fsys.publicKey(name))
	n := &viewKeyDir{fsys: d.fsys, key: name}
	return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: viewIno(name)}), 0
}

// viewKeyDir is by-property/<key>/: one directory per value in use.
type viewKeyDir struct {
	gofs.Inode
	viewXattr
	fsys *FS
	key  string
}

var _ = (gofs.NodeLookuper)((*viewKeyDir)(nil))
var _ = (gofs.NodeReaddirer)((*viewKeyDir)(nil))
var _ = (gofs.NodeGetattrer)((*viewKeyDir)(nil))

func (d *viewKeyDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.viewDirAttr(&out.Attr)
	out.SetTimeout(untilChanged)
	return 0
}

func (d *viewKeyDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	values, err := d.fsys.st.ViewValues(caller(ctx), d.key, layout.Listed)
	if err != nil {
		return nil, toErrno(err)
	}
	ents := make([]fuse.DirEntry, len(values))
	for i, v := range values {
		ents[i] = fuse.DirEntry{Name: layout.ViewName(v), Ino: viewIno(d.key, v), Mode: syscall.S_IFDIR}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *viewKeyDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	v, ok := layout.ParseViewName(name)
	if !ok || !layout.Listed(v) {
		return nil, syscall.ENOENT
	}
	ok, err := d.fsys.st.ViewHasValue(caller(ctx), d.key, v)
	if err != nil {
		return nil, toErrno(err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	d.fsys.viewDirAttr(&out.Attr)
	d.fsys.viewEntry(out, d.fsys.publicValue(d.key, v))
	n := &viewValueDir{fsys: d.fsys, key: d.key, value: v}
	return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: viewIno(d.key, v)}), 0
}

// viewValueDir is by-property/<key>/<value>/: a symlink per image, named
// by the image's name.
type viewValueDir struct {
	gofs.Inode
	viewXattr
	fsys       *FS
	key, value string
}

var _ = (gofs.NodeLookuper)((*viewValueDir)(nil))
var _ = (gofs.NodeReaddirer)((*viewValueDir)(nil))
var _ = (gofs.NodeGetattrer)((*viewValueDir)(nil))

func (d *viewValueDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.viewDirAttr(&out.Attr)
	out.SetTimeout(untilChanged)
	return 0
}

func (d *viewValueDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ims, err := d.fsys.st.ViewImages(caller(ctx), d.key, d.value)
	if err != nil {
		return nil, toErrno(err)
	}
	ents := make([]fuse.DirEntry, len(ims))
	for i, im := range ims {
		ents[i] = fuse.DirEntry{Name: im.Name, Ino: im.Ino(store.SlotViewLink), Mode: syscall.S_IFLNK}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *viewValueDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.fsys.st.LookupFor(caller(ctx), name)
	if im == nil {
		return nil, syscall.ENOENT
	}
	if v, ok := im.Property(d.key); !ok || v != d.value {
		return nil, syscall.ENOENT
	}
	l := &viewLink{fsys: d.fsys, id: im.ID, up: "../../../"}
	l.fillAttr(im, &out.Attr)
	d.fsys.viewEntry(out, store.Visible(store.Anyone, im, store.ReachList))
	return d.NewInode(ctx, l, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: im.Ino(store.SlotViewLink)}), 0
}

// viewLink is the symlink to by-id/<id>. It has one inode per image,
// whichever view it is reached through. up is the path from the link's
// directory to the mount's root ("../../../" under by-property/<key>/<value>/,
// "../../" under by-tag/<tag>/).
type viewLink struct {
	gofs.Inode
	viewXattr
	fsys *FS
	id   string
	up   string
}

var _ = (gofs.NodeReadlinker)((*viewLink)(nil))
var _ = (gofs.NodeGetattrer)((*viewLink)(nil))

func (l *viewLink) target() string { return l.up + "by-id/" + l.id }

func (l *viewLink) fillAttr(im *store.Image, a *fuse.Attr) {
	a.Mode = syscall.S_IFLNK | 0o777
	a.Size = uint64(len(l.target()))
	a.Nlink = 1
	// No blocks, as a local file system's short symlinks (the target is
	// in the inode): without Blksize go-fuse would count a 4 KiB block
	// and du would add 4 KiB per link of every view.
	a.Blksize = 4096
	a.Blocks = 0
	a.Uid = im.Owner
	a.Gid = im.GID
	t := im.UpdatedAt
	a.SetTimes(&t, &t, &t)
}

func (l *viewLink) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	im := l.fsys.st.Get(l.id)
	if im == nil {
		return syscall.ENOENT
	}
	l.fillAttr(im, &out.Attr)
	out.SetTimeout(untilChanged)
	return 0
}

func (l *viewLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target()), 0
}

// Rmdir refuses (root.go says why).
func (d *byPropertyDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

var _ = (gofs.NodeRmdirer)((*byPropertyDir)(nil))

// Rmdir refuses (root.go says why).
func (d *viewKeyDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

var _ = (gofs.NodeRmdirer)((*viewKeyDir)(nil))

// Unlink of a view's symlink.
func (d *viewValueDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

var _ = (gofs.NodeUnlinker)((*viewValueDir)(nil))
