package fs

import (
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/imagefs/imagefs/store"
)

// untilChanged is how long the kernel may keep what imagefs drops from
// its caches itself whenever the image record behind it changes
// (invalidated below): the entries and attributes of image directories,
// properties/ and property files, and the page cache of property files.
// A property file read twice, or grep over properties/ of every image,
// then costs one OPEN per file (the kernel has no way to open a FUSE file
// without asking); with nothing cached it took 14 requests per file.
const untilChanged = time.Hour

// invalidate is the store's change hook (store.Store.OnChange): it drops
// what the kernel caches of the changed image before the request that
// changed it replies, so a value set through an xattr is read at once
// through its property file, and the other way round, and ls -l shows
// the new mode, size and time.
//
// Only inodes the kernel knows are reached: the image's directories under
// images/ (old and new name) and by-id/, and what is below them. Their
// attributes are dropped (every change moves updated_at, which is their
// mtime); a property file whose value changed also loses its cached
// pages. Two exceptions to "before the request replies", both entries
// (an entry notification needs the lock of its directory): entries of
// removed properties are dropped in the background (dropEntryLater),
// since the kernel may hold properties/ for the very request being served
// (unlink, rename, create); until then the old entry leads to an inode
// whose Getattr and Open by path answer ESTALE, which makes the kernel
// look the name up again. The other entries (an old image name, a deleted
// image's by-id/ entry, the view entries of invalidateViews) are waited
// for up to dropEntryWait, then the request replies (dropEntry).
//
// The store calls it with no store lock held, and it holds none of its
// own (notify.go). A notification that drops pages waits for reads of
// those pages in flight; those reads never wait for a store change, so
// this cannot deadlock.
func (f *FS) invalidate(c store.Change) {
	id := c.ID()
	// Counted before any page is dropped; the stores of opens that read
	// an older value are waited for (pageGate).
	gate := f.imageGate(id)
	defer gate.waitStores(gate.change())
	var dirs []*gofs.Inode
	add := func(d *gofs.Inode) {
		if d == nil {
			return
		}
		if n, ok := d.Operations().(*imageDir); !ok || n.id != id {
			return // the name now belongs to another image
		}
		for _, o := range dirs {
			if o == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	child := func(dir *gofs.Inode, name string) *gofs.Inode {
		if dir == nil {
			return nil
		}
		return dir.GetChild(name)
	}
	add(child(f.byIDInode(), id))
	images := f.root().GetChild("images")
	if c.Old != nil {
		add(child(images, c.Old.Name))
	}
	if c.New != nil && (c.Old == nil || c.New.Name != c.Old.Name) {
		add(child(images, c.New.Name))
	}
	// Property files are one inode under both trees: their content is
	// notified once, the entry of a removed one under each tree.
	var done map[*gofs.Inode]bool
	for _, d := range dirs {
		d.NotifyContent(-1, 0)
		for name, ch := range d.Children() {
			ch.NotifyContent(-1, 0)
			if name != "properties" {
				continue
			}
			for entry, p := range ch.Children() {
				key := entry
				if pn, ok := p.Operations().(*propNode); ok {
					key = pn.key
				}
				was, had := value(c.Old, key)
				is, has := value(c.New, key)
				if had && !has && c.New != nil {
					f.dropEntryLater(ch, entry)
				}
				if done[p] {
					continue
				}
				if done == nil {
					done = map[*gofs.Inode]bool{}
				}
				done[p] = true
				if was == is && had == has {
					p.NotifyContent(-1, 0)
				} else {
					p.NotifyContent(0, 0)
				}
			}
		}
	}
}

// value returns property key of im (nil: none).
func value(im *store.Image, key string) (string, bool) {
	if im == nil {
		return "", false
	}
	return im.Property(key)
}
