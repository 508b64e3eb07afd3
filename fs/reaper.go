package fs

import (
	"cmp"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// The kernel keeps every inode it has looked up until memory runs short,
// and go-fuse keeps a node (about 800 bytes of daemon memory with its
// maps) for each. After ls -lR over 100,000 images that was 1.7 million
// nodes and 1.4 GB of daemon memory, for as long as the kernel did not
// need the memory. The reaper bounds it: every reapEvery, when the nodes
// under image directories the kernel knows (estimated from a sample of
// them) are more than Options.CacheNodes, it drops the entries of the image
// directories under images/ or by-id/ that the daemon has served nothing
// for since the last round, least recently used first, until about 90% of
// them are left, keeping minKeptImages at least. The kernel then
// drops them with everything under them and sends FORGET, and go-fuse
// frees the nodes. A later access looks them up again; open files are not
// affected. After a large reap the freed memory goes back to the system.
//
// The budget is in nodes, not images, so that grep over one property of
// 10,000 images (three nodes each) stays cached between runs, while ls -lR
// (twenty nodes an image) is cut back to a couple of thousand images.
const (
	minKeptImages = 1024
	reapSample    = 256 // image directories sampled to estimate the nodes
	reapEvery     = 2 * time.Second
	// freeAfterReap is how many image directories reaped since the memory
	// was last given back make the reaper give it back (a full GC, some
	// tens of ms of CPU at 100,000 images) once a round reaps nothing
	// more: after a burst of use, an idle daemon's RSS is what it holds.
	freeAfterReap = 1_000
)

// usage records in which reaper round the daemon last served a request
// about each image.
type usage struct {
	round atomic.Int64
	last  sync.Map // image id -> *atomic.Int64 (a round)
}

// touch records that image id is in use now.
func (u *usage) touch(id string) {
	v, ok := u.last.Load(id)
	if !ok {
		v, _ = u.last.LoadOrStore(id, new(atomic.Int64))
	}
	if r := u.round.Load(); v.(*atomic.Int64).Load() != r {
		v.(*atomic.Int64).Store(r)
	}
}

// lastUsed returns the round image id was last used in, -1 if never.
func (u *usage) lastUsed(id string) int64 {
	if v, ok := u.last.Load(id); ok {
		return v.(*atomic.Int64).Load()
	}
	return -1
}

// reapLoop reaps every reapEvery until done is closed.
func (f *FS) reapLoop(done <-chan struct{}) {
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	freed := 0
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		n := f.reap()
		freed += n
		if n == 0 && freed >= freeAfterReap {
			debug.FreeOSMemory()
			freed = 0
		}
	}
}

// reap starts a new round and drops the kernel's entries of the image
// directories beyond minKeptImages that were not used in the last round.
// It returns how many it dropped.
func (f *FS) reap() int {
	round := f.usage.round.Add(1)
	reaped := 0
	known := map[string]bool{}
	trees := []*gofs.Inode{f.root().GetChild("images"), f.byIDInode()}
	kids := make([]map[string]*gofs.Inode, len(trees))
	images, sampled, nodes := 0, 0, 0
	for i, dir := range trees {
		kids[i] = dir.Children()
		images += len(kids[i])
		for _, ch := range kids[i] {
			if sampled == reapSample {
				break
			}
			sampled++
			nodes += subtreeNodes(ch)
		}
	}
	keep := images // how many image directories to keep, both trees
	if sampled > 0 {
		perImage := float64(nodes) / float64(sampled)
		if est := perImage * float64(images); est > float64(f.cacheNodes) {
			keep = max(minKeptImages, int(0.9*float64(f.cacheNodes)/perImage))
		}
	}
	for i, dir := range trees {
		type entry struct {
			name string
			last int64
		}
		var idle []entry
		for name, ch := range kids[i] {
			d, ok := ch.Operations().(*imageDir)
			if !ok {
				continue
			}
			known[d.id] = true
			if last := f.usage.lastUsed(d.id); last < round-1 {
				idle = append(idle, entry{name, last})
			}
		}
		// This tree's share of what is kept.
		excess := len(kids[i]) - max(minKeptImages, keep*len(kids[i])/max(images, 1))
		if keep >= images || excess <= 0 {
			continue
		}
		slices.SortFunc(idle, func(a, b entry) int { return cmp.Compare(a.last, b.last) })
		for _, e := range idle[:min(excess, len(idle))] {
			dir.NotifyEntry(e.name) // ENOENT: the kernel dropped it already
			reaped++
		}
	}
	// Forget the use of images the kernel no longer knows (deleted,
	// reaped earlier or dropped by the kernel itself).
	f.usage.last.Range(func(k, _ any) bool {
		if !known[k.(string)] {
			f.usage.last.Delete(k)
		}
		return true
	})
	return reaped
}

// subtreeNodes counts the nodes go-fuse keeps for an image directory: it,
// its files and properties/ with its files.
func subtreeNodes(d *gofs.Inode) int {
	n := 1
	for name, ch := range d.Children() {
		n++
		if name == "properties" {
			n += len(ch.Children())
		}
	}
	return n
}
