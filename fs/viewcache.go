package fs

import (
	"os"
	"slices"

	"github.com/imagefs/imagefs/layout"
	"github.com/imagefs/imagefs/store"
)

// invalidateViews drops what the kernel keeps of the filter views
// (views.go) that change c makes stale, before the request that made the
// change replies (entries: or after dropEntryWait, see dropEntry):
//
//   - the attributes of the image's link (owner and mtime change with
//     every change), once: the link is one inode in every view;
//   - for every property whose view the image leaves (its value changed
//     or went, the image was renamed or deleted, or who may see it
//     changed), the link's entry in by-property/<key>/<old value>/;
//   - the entry of by-property/<key>/<old value> once the mount's user
//     sees no image there any more, and of by-property/<key> once no
//     value of it is left.
//
// "The mount's user" is the mounting user, or with --allow-other
// store.Anyone, as for viewEntry: entries are cached there only while
// every user sees them. Only entries the kernel has are reached (go-fuse
// keeps a child for each entry the kernel holds). Joining a view needs
// nothing: the kernel keeps no negative entries (NegativeTimeout 0), and
// listings are never cached.
func (f *FS) invalidateViews(c store.Change) {
	bp := f.root().GetChild("by-property")
	if bp == nil || c.Old == nil {
		return
	}
	access := accessUnchanged(c)
	viewer := f.viewer()
	notified := false
	for _, k := range c.Old.Keys() {
		kd := bp.GetChild(k)
		if kd == nil {
			continue
		}
		was, _ := c.Old.Property(k)
		if !layout.Listed(was) {
			continue
		}
		is, has := value(c.New, k)
		stays := access && has && is == was && c.New.Name == c.Old.Name
		vd := kd.GetChild(layout.ViewName(was))
		if vd != nil {
			if link := vd.GetChild(c.Old.Name); link != nil {
				if !notified {
					link.NotifyContent(-1, 0) // attributes only
					notified = true
				}
				if !stays {
					f.dropEntry(vd, c.Old.Name)
				}
			}
		}
		if stays {
			continue
		}
		// The key can be left empty only with the value.
		if ok, err := f.st.ViewHasValue(viewer, k, was); err == nil && !ok {
			if vd != nil {
				f.dropEntry(kd, layout.ViewName(was))
			}
			if ok, err := f.st.ViewHasKey(viewer, k, layout.Listed); err == nil && !ok {
				f.dropEntry(bp, k)
			}
		}
	}
	if !notified && c.New != nil {
		// The link may be known only under a view the image joined
		// since it was looked up (a name or value changed back).
		for _, k := range c.New.Keys() {
			if slices.Contains(c.Old.Keys(), k) {
				continue
			}
			if kd := bp.GetChild(k); kd != nil {
				is, _ := c.New.Property(k)
				if vd := kd.GetChild(layout.ViewName(is)); vd != nil {
					if link := vd.GetChild(c.New.Name); link != nil {
						link.NotifyContent(-1, 0)
						break
					}
				}
			}
		}
	}
}

// accessUnchanged reports whether change c (of an image that existed
// before it) leaves who may see the image as it was: not a delete, the
// same owner, visibility and members.
func accessUnchanged(c store.Change) bool {
	return c.New != nil && c.New.Owner == c.Old.Owner && c.New.Visibility == c.Old.Visibility &&
		c.New.Extra[store.KeyMembers] == c.Old.Extra[store.KeyMembers]
}

// viewer is whom the kernel's cached view entries serve: without
// --allow-other the mounting user (the kernel lets no other in, and the
// daemon runs as that user); with it every user (store.Anyone).
func (f *FS) viewer() store.Caller {
	if f.allowOther {
		return store.Anyone
	}
	return store.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
}
