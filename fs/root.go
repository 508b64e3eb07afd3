package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/layout"
)

// rootNode is MOUNTPOINT/: images/, by-id/, by-property/, by-tag/.
type rootNode struct {
	gofs.Inode
	fsys *FS
}

var _ = (gofs.NodeOnAdder)((*rootNode)(nil))
var _ = (gofs.NodeStatfser)((*rootNode)(nil))
var _ = (gofs.NodeGetattrer)((*rootNode)(nil))
var _ = (gofs.NodeLookuper)((*rootNode)(nil))
var _ = (gofs.NodeRmdirer)((*rootNode)(nil))

func (r *rootNode) OnAdd(ctx context.Context) {
	add := func(name string, node gofs.InodeEmbedder, ino uint64) {
		ch := r.NewPersistentInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
		r.AddChild(name, ch, false)
	}
	add("images", &imagesDir{imageListDir{fsys: r.fsys}}, inoImages)
	add("by-id", &byIDDir{imageListDir{fsys: r.fsys, byID: true}}, inoByID)
	add("by-property", &byPropertyDir{fsys: r.fsys}, inoByProperty)
	add("by-tag", &byTagDir{fsys: r.fsys}, inoByTag)
}

// Lookup finds the fixed directories, with cached entries and attributes.
// Without it go-fuse answers for them with no timeouts (the mount sets no
// default), and every path walk asked the daemon for images/ again (a
// LOOKUP and a GETATTR): four requests per file for ls -l images/.
func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name == layout.CatalogDir { // catalog.go: found, not listed
		r.fsys.fixedDirAttr(&out.Attr, 0o555)
		out.SetEntryTimeout(cacheTimeout)
		out.SetAttrTimeout(cacheTimeout)
		return r.NewInode(ctx, &catalogDir{fsys: r.fsys}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: catalogIno()}), 0
	}
	ch := r.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	var a fuse.AttrOut
	if errno := ch.Operations().(gofs.NodeGetattrer).Getattr(ctx, nil, &a); errno != 0 {
		return nil, errno
	}
	out.Attr = a.Attr
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
	return ch, 0
}

func (r *rootNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.fsys.fixedDirAttr(&out.Attr, 0o755)
	out.SetTimeout(cacheTimeout)
	return 0
}

func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	sp, err := r.fsys.st.Space()
	if err != nil {
		return toErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = sp.Blocks, sp.BlocksFree, sp.BlocksAvail
	out.Files, out.Ffree = sp.Files, sp.FilesFree
	out.Bsize, out.Frsize, out.NameLen = sp.BlockSize, sp.FragmentSize, sp.NameLen
	return 0
}

func (f *FS) root() *gofs.Inode { return f.rootNode.EmbeddedInode() }

// Rmdir of a fixed directory. go-fuse takes a directory without Rmdir
// (or Unlink) as one where rmdir(2) (unlink(2)) succeeds: it answers OK
// and drops the child from its tree, so `rmdir MNT/by-id` made by-id/
// vanish until the next mount. Every directory that has no such
// operation of its own refuses it next to its type.
func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
