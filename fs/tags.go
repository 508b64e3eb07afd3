package fs

import (
	"context"
	"slices"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/layout"
	"github.com/imagefs/imagefs/store"
)

// The tag view (docs/layout.md, "Filter views"):
//
//	by-tag/                  the tags in use
//	  <escaped tag>/         one symlink per image with that tag
//	    <image name> -> ../../by-id/<id>
//
// As by-property/ (views.go): answered from the store's index (one entry
// per tag, store/tags.go), with the caller's visibility, listings never
// cached, entries and attributes kept until changed and dropped by
// invalidateTagViews. Tags are escaped in names as property values are
// (layout.ViewName). The link is one inode per image in every tag
// (store.SlotTagLink; not the by-property link's, whose target is one
// level deeper).

// tagIno is the inode number of by-tag/<tag>: a view inode of a path no
// by-property view has (property keys never contain '/').
func tagIno(tag string) uint64 { return viewIno("by-tag/", tag) }

// byTagDir is by-tag/: one directory per tag in use.
type byTagDir struct {
	gofs.Inode
	viewXattr
	fsys *FS
}

var _ = (gofs.NodeLookuper)((*byTagDir)(nil))
var _ = (gofs.NodeReaddirer)((*byTagDir)(nil))
var _ = (gofs.NodeGetattrer)((*byTagDir)(nil))
var _ = (gofs.NodeRmdirer)((*byTagDir)(nil))

func (d *byTagDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.fixedDirAttr(&out.Attr, 0o755)
	return 0
}

func (d *byTagDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	tags, err := d.fsys.st.ViewValues(caller(ctx), store.KeyTags, layout.Listed)
	if err != nil {
		return nil, toErrno(err)
	}
	ents := make([]fuse.DirEntry, len(tags))
	for i, t := range tags {
		ents[i] = fuse.DirEntry{Name: layout.ViewName(t), Ino: tagIno(t), Mode: syscall.S_IFDIR}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *byTagDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	tag, ok := layout.ParseViewName(name)
	if !ok || !layout.Listed(tag) {
		return nil, syscall.ENOENT
	}
	ok, err := d.fsys.st.ViewHasValue(caller(ctx), store.KeyTags, tag)
	if err != nil {
		return nil, toErrno(err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	d.fsys.viewDirAttr(&out.Attr)
	d.fsys.viewEntry(out, d.fsys.publicValue(store.KeyTags, tag))
	n := &tagDir{fsys: d.fsys, tag: tag}
	return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: tagIno(tag)}), 0
}

// Rmdir refuses (root.go says why).
func (d *byTagDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

// tagDir is by-tag/<tag>/: a symlink per image with the tag, named by the
// image's name.
type tagDir struct {
	gofs.Inode
	viewXattr
	fsys *FS
	tag  string
}

var _ = (gofs.NodeLookuper)((*tagDir)(nil))
var _ = (gofs.NodeReaddirer)((*tagDir)(nil))
var _ = (gofs.NodeGetattrer)((*tagDir)(nil))
var _ = (gofs.NodeUnlinker)((*tagDir)(nil))

func (d *tagDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.viewDirAttr(&out.Attr)
	out.SetTimeout(untilChanged)
	return 0
}

func (d *tagDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ims, err := d.fsys.st.ViewImages(caller(ctx), store.KeyTags, d.tag)
	if err != nil {
		return nil, toErrno(err)
	}
	ents := make([]fuse.DirEntry, len(ims))
	for i, im := range ims {
		ents[i] = fuse.DirEntry{Name: im.Name, Ino: im.Ino(store.SlotTagLink), Mode: syscall.S_IFLNK}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *tagDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.fsys.st.LookupFor(caller(ctx), name)
	if im == nil || !im.HasTag(d.tag) {
		return nil, syscall.ENOENT
	}
	l := &viewLink{fsys: d.fsys, id: im.ID, up: "../../"} // by-tag/<tag>/<name> -> ../../by-id/<id>
	l.fillAttr(im, &out.Attr)
	d.fsys.viewEntry(out, store.Visible(store.Anyone, im, store.ReachList))
	return d.NewInode(ctx, l, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: im.Ino(store.SlotTagLink)}), 0
}

// Unlink of a view's symlink.
func (d *tagDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

// invalidateTagViews drops what the kernel keeps of by-tag/ that change c
// makes stale, as invalidateViews does for by-property/: the link's
// attributes (once), its entry in by-tag/<tag>/ for every tag whose view
// the image leaves (the tag went, the image was renamed or deleted, or
// who may see it changed), and by-tag/<tag> once the mount's user sees no
// image with the tag.
func (f *FS) invalidateTagViews(c store.Change) {
	bt := f.root().GetChild("by-tag")
	if bt == nil || c.Old == nil {
		return
	}
	access := accessUnchanged(c)
	viewer := f.viewer()
	notified := false
	old := c.Old.Tags()
	for _, tag := range old {
		if !layout.Listed(tag) {
			continue
		}
		td := bt.GetChild(layout.ViewName(tag))
		if td == nil {
			continue
		}
		stays := access && c.New.HasTag(tag) && c.New.Name == c.Old.Name
		if link := td.GetChild(c.Old.Name); link != nil {
			if !notified {
				link.NotifyContent(-1, 0) // attributes only
				notified = true
			}
			if !stays {
				f.dropEntry(td, c.Old.Name)
			}
		}
		if stays {
			continue
		}
		if ok, err := f.st.ViewHasValue(viewer, store.KeyTags, tag); err == nil && !ok {
			f.dropEntry(bt, layout.ViewName(tag))
		}
	}
	if !notified && c.New != nil {
		// The link may be known only under a tag the image got since.
		for _, tag := range c.New.Tags() {
			if slices.Contains(old, tag) || !layout.Listed(tag) {
				continue
			}
			if td := bt.GetChild(layout.ViewName(tag)); td != nil {
				if link := td.GetChild(c.New.Name); link != nil {
					link.NotifyContent(-1, 0)
					break
				}
			}
		}
	}
}
