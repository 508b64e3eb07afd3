package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
	"github.com/imagefs/imagefs/xattr"
)

// node is what every per-image node knows: the store and the image id.
type node struct {
	gofs.Inode
	fsys *FS
	id   string
}

// imageID returns the id of the node's image.
func (n *node) imageID() string { return n.id }

// image returns the current record, or nil once deleted. Every request
// about an image asks for it, so it also records that the image is in use
// (reaper.go).
func (n *node) image() *store.Image {
	n.fsys.usage.touch(n.id)
	return n.fsys.st.Get(n.id)
}

// imageFor returns the current record if the caller of ctx may see the
// image, or nil once it is deleted or when the caller no longer may (its
// access was revoked: removed from members, or the visibility changed).
// Requests about an image through a descriptor or cwd held since before a
// revocation then answer ENOENT, as for an image the caller never saw. The
// view is by id, the widest (a descriptor may have come either way). Like
// image, it records that the image is in use.
func (n *node) imageFor(ctx context.Context) *store.Image {
	n.fsys.usage.touch(n.id)
	return n.fsys.st.GetFor(caller(ctx), n.id)
}

// fillAttr fills the attributes shared by an image's nodes: owner, group
// and times from the record.
func (n *node) fillAttr(im *store.Image, a *fuse.Attr) {
	a.Uid = im.Owner
	a.Gid = im.GID
	t := im.UpdatedAt
	a.SetTimes(&t, &t, &t)
}

// modeFor returns a directory's perm as is for an image others may use,
// and without the group and other bits for a private one (0755 -> 0700).
// Mode bits only show the visibility; the store enforces it. Files keep
// the modes layout.md gives them (sealed data and system properties
// 0444, the rest 0644): the 0700 directories above them already keep
// other users out, and rsync --inplace -p --chmod=F444 must find a sealed
// image.vhd at 0444.
func modeFor(im *store.Image, perm uint32) uint32 {
	if im.OthersMayRead() {
		return perm
	}
	return perm & 0o700
}

// Fsync hands the request to the open file (an upload syncs its staged
// data, a property handle sets its value); otherwise there is nothing to
// do: catalog commits are synced and sealed data is durable.
func (n *node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if s, ok := f.(gofs.FileFsyncer); ok {
		return s.Fsync(ctx, flags)
	}
	return 0
}

// Extended attributes: property k is "user.k" on the image directory and
// on image.vhd (see package xattr).

// Getxattr answers EOPNOTSUPP for names outside user.* (ACLs, security
// labels, capabilities), as filesystems without those namespaces do, and
// as Setxattr does. ls -l and cp -a then take the mount as having none
// and stop asking: ENODATA made ls -l ask three times per file. An image
// deleted, or no longer visible to the caller, is ENOENT.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	key, ok := xattr.Key(attr)
	if !ok {
		return 0, toErrno(errNotUserXattr)
	}
	im := n.imageFor(ctx)
	if im == nil {
		return 0, syscall.ENOENT
	}
	v, ok := im.Property(key)
	if !ok {
		return 0, toXattrErrno(store.ErrNotFound)
	}
	return xattr.Copy(dest, []byte(v))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	im := n.imageFor(ctx)
	if im == nil {
		return 0, syscall.ENOENT
	}
	return xattr.Copy(dest, xattr.List(im.Keys()))
}

// Setxattr sets property key; while a shared catalog is unreachable it
// fails with EBUSY (see toSetxattrErrno), not EAGAIN.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	key, ok := xattr.Key(attr)
	if !ok {
		return toErrno(errNotUserXattr)
	}
	mode, errno := xattr.Mode(flags)
	if errno != 0 {
		return errno
	}
	return toSetxattrErrno(n.fsys.setProperty(caller(ctx), n.id, key, string(data), mode))
}

// Removexattr of a name outside user.* is EOPNOTSUPP, as Getxattr and
// Setxattr (README's error table).
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	key, ok := xattr.Key(attr)
	if !ok {
		return toErrno(errNotUserXattr)
	}
	return toXattrErrno(n.fsys.st.RemoveProperty(caller(ctx), n.id, key))
}
