package fs

import (
	"flag"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var getattrCost = flag.Bool("getattr-cost", false, "TestSealedGetattrCost: measure what a sealed image.vhd's GETATTR spends on stat(2) of its data file")

// TestSealedGetattrCost measures the GETATTR of a sealed image.vhd (a
// statx with AT_STATX_FORCE_SYNC, which the kernel always sends to the
// daemon) against its share that stats the data file for st_blocks
// (Store.DataBlocks) and the whole of fillDataAttr. A measurement, not
// a check: run with
//
//	go test -count=1 -run TestSealedGetattrCost ./fs/ -args -getattr-cost
func TestSealedGetattrCost(t *testing.T) {
	if !*getattrCost {
		t.Skip("a measurement: -args -getattr-cost")
	}
	m := newTestMount(t, mountConfig{})
	id := m.upload("a", fixedVHD(t, 64<<20))
	p := m.path("by-id", id, "image.vhd")
	var sx unix.Statx_t
	noErr(t, "statx", unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx))
	in := m.fsys.root().GetChild("by-id").GetChild(id).GetChild("image.vhd")
	if in == nil {
		t.Fatal("no inode for by-id/<id>/image.vhd after a statx")
	}
	n := in.Operations().(*dataNode)
	im := m.st.Get(id)
	report := func(what string, f func(b *testing.B)) {
		r := testing.Benchmark(f)
		t.Logf("%-34s %8d ns/op  (%d runs)", what, r.NsPerOp(), r.N)
	}
	report("GETATTR (statx FORCE_SYNC)", func(b *testing.B) {
		for b.Loop() {
			if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx); err != nil {
				b.Fatal(err)
			}
		}
	})
	report("fillDataAttr (sealed)", func(b *testing.B) {
		var a fuse.Attr
		for b.Loop() {
			n.fillDataAttr(im, &a)
		}
	})
	report("Store.DataBlocks (stat of data)", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.st.DataBlocks(id); err != nil {
				b.Fatal(err)
			}
		}
	})
}
