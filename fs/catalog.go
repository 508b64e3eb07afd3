package fs

import (
	"context"
	"encoding/json"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/layout"
	"github.com/imagefs/imagefs/store"
)

// catalogIno returns the inode number of a node under .catalog: a view
// inode of a path no view can have (index keys never hold \x01).
func catalogIno(parts ...string) uint64 {
	return viewIno(append([]string{"\x01catalog"}, parts...)...)
}

// catalogDir is .catalog/ (level 0), .catalog/by-property/ (level 1) or
// .catalog/by-property/<key>/ (level 2, key set).
type catalogDir struct {
	gofs.Inode
	fsys  *FS
	level int
	key   string
}

var _ = (gofs.NodeLookuper)((*catalogDir)(nil))
var _ = (gofs.NodeReaddirer)((*catalogDir)(nil))
var _ = (gofs.NodeGetattrer)((*catalogDir)(nil))

func (d *catalogDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.fixedDirAttr(&out.Attr, 0o555)
	out.SetTimeout(cacheTimeout)
	return 0
}

// Readdir lists images and by-property in .catalog/; the levels below
// list nothing (every name resolves).
func (d *catalogDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	if d.level != 0 {
		return withDots(&d.Inode, nil), 0
	}
	return withDots(&d.Inode, []fuse.DirEntry{
		{Name: "by-property", Mode: syscall.S_IFDIR, Ino: catalogIno("by-property")},
		{Name: "images", Mode: syscall.S_IFREG, Ino: catalogIno("images")},
	}), 0
}

func (d *catalogDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	out.SetEntryTimeout(uncached)
	out.SetAttrTimeout(uncached)
	switch {
	case d.level == 0 && name == "images":
		return d.file(ctx, &catalogFile{fsys: d.fsys}, out, "images"), 0
	case d.level == 0 && name == "by-property":
		d.fsys.fixedDirAttr(&out.Attr, 0o555)
		n := &catalogDir{fsys: d.fsys, level: 1}
		return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: catalogIno("by-property")}), 0
	case d.level == 1 && layout.ListedKey(name):
		d.fsys.fixedDirAttr(&out.Attr, 0o555)
		n := &catalogDir{fsys: d.fsys, level: 2, key: name}
		return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: catalogIno("by-property", name)}), 0
	case d.level == 2:
		v, ok := layout.ParseViewName(name)
		if !ok || !layout.Listed(v) {
			return nil, syscall.ENOENT
		}
		return d.file(ctx, &catalogFile{fsys: d.fsys, key: d.key, value: v, view: true}, out, "by-property", d.key, v), 0
	}
	return nil, syscall.ENOENT
}

func (d *catalogDir) file(ctx context.Context, n *catalogFile, out *fuse.EntryOut, parts ...string) *gofs.Inode {
	n.fillAttr(&out.Attr)
	return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: catalogIno(parts...)})
}

// catalogFile is one catalog file: every image the opener sees listed
// (view false) or those of one view.
type catalogFile struct {
	gofs.Inode
	fsys       *FS
	view       bool
	key, value string
}

var _ = (gofs.NodeOpener)((*catalogFile)(nil))
var _ = (gofs.NodeReader)((*catalogFile)(nil))
var _ = (gofs.NodeGetattrer)((*catalogFile)(nil))

func (n *catalogFile) fillAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Nlink = 1
	a.Size = 0
	a.SetTimes(&n.fsys.started, &n.fsys.started, &n.fsys.started)
}

func (n *catalogFile) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	out.SetTimeout(uncached)
	return 0
}

// catalogHandle holds the content made at open.
type catalogHandle struct{ data []byte }

func (n *catalogFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	c := caller(ctx)
	var ims []*store.Image
	if n.view {
		var err error
		if ims, err = n.fsys.st.ViewImages(c, n.key, n.value); err != nil {
			return nil, 0, toErrno(err)
		}
	} else {
		ims = n.fsys.st.ListFor(c)
	}
	return &catalogHandle{data: CatalogLines(ims)}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *catalogFile) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*catalogHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

// CatalogLines returns the content of a catalog file listing ims: one
// JSON object per image and line, every property (Image.Keys, in that
// order) as a string. A value that is not valid UTF-8 shows its invalid
// bytes as U+FFFD.
func CatalogLines(ims []*store.Image) []byte {
	b := make([]byte, 0, len(ims)*512)
	for _, im := range ims {
		b = append(b, '{')
		for i, k := range im.Keys() {
			if i > 0 {
				b = append(b, ',')
			}
			v, _ := im.Property(k)
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, v)
		}
		b = append(b, "}\n"...)
	}
	return b
}

// appendJSONString appends s as a JSON string: as it is when it is
// printable ASCII without '"' or '\\' (names, ids, times, numbers),
// else as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // cannot fail for a string
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

var _ = (gofs.NodeReaddirer)((*rootNode)(nil))

// Readdir lists the root's fixed directories (and . and ..). go-fuse would list every
// child it knows, .catalog too once looked up (it is found, not listed).
func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return withDots(&r.Inode, []fuse.DirEntry{
		{Name: "by-id", Mode: syscall.S_IFDIR, Ino: inoByID},
		{Name: "by-property", Mode: syscall.S_IFDIR, Ino: inoByProperty},
		{Name: "by-tag", Mode: syscall.S_IFDIR, Ino: inoByTag},
		{Name: "images", Mode: syscall.S_IFDIR, Ino: inoImages},
	}), 0
}
