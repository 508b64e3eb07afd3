package fs

import (
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// withDots returns the listing of directory n: "." and ".." (as every
// directory lists them, for ls -a), then ents. ".." is n's parent, or n
// itself at the root of the mount.
func withDots(n *gofs.Inode, ents []fuse.DirEntry) gofs.DirStream {
	self := n.StableAttr().Ino
	parent := self
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	all := make([]fuse.DirEntry, 0, len(ents)+2)
	all = append(all,
		fuse.DirEntry{Name: ".", Ino: self, Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	return gofs.NewListDirStream(append(all, ents...))
}
