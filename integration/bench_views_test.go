package integration

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The views section of the performance suite (TestBenchSuite, -bench-only
// views): with N images (5,000 by default), all public, the view
// by-property/visibility/public/ has N links.
var benchViewN = flag.Int("bench-view-images", 5_000, "TestBenchSuite: images in the catalog of the views section (all in by-property/visibility/public/)")

func benchViews(t *testing.T, tab *benchTable) {
	n := *benchViewN
	storeDir, local := benchTrees(t, n)
	m := startOn(t, storeDir)

	// The local reference of the view: a directory of n symlinks with
	// targets of the same length as the view's.
	links := filepath.Join(t.TempDir(), "links")
	if err := os.Mkdir(links, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		target := fmt.Sprintf("../../../by-id/%08d-0000-4000-8000-000000000000", i)
		if err := os.Symlink(target, filepath.Join(links, fmt.Sprintf("img-%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
	view := filepath.Join(m.Mnt, "by-property", "visibility", "public")

	// interleave runs a (imagefs) and b (local) *benchRuns times each, in
	// alternating order, each after the kernel's 1 s caches have expired,
	// and returns the medians.
	interleave := func(a, b func() time.Duration) (float64, float64) {
		a()
		b() // warm both
		var as, bs []float64
		for r := range *benchRuns {
			expire()
			if r%2 == 0 {
				as = append(as, a().Seconds())
				bs = append(bs, b().Seconds())
			} else {
				bs = append(bs, b().Seconds())
				as = append(as, a().Seconds())
			}
		}
		return median(as), median(bs)
	}

	lsl := func(dir string) func() time.Duration {
		return func() time.Duration {
			start := time.Now()
			r := execCmd("sh", "-c", `ls -l "$1" | grep -c -- ' -> '`, "sh", dir)
			if r.err != nil || strings.TrimSpace(r.stdout) != fmt.Sprint(n) {
				t.Fatalf("ls -l %s: %s", dir, r)
			}
			return time.Since(start)
		}
	}
	v, ref := interleave(lsl(view), lsl(links))
	tab.add(figure{name: fmt.Sprintf("`ls -l by-property/visibility/public/`, %d links", n), unit: "s",
		value: v, refName: fmt.Sprintf("local dir of %d symlinks", n), ref: ref, target: 2,
		note: "run again after 1.1 s; imagefs keeps the view's entries, attributes and link targets until an image changes"})

	// The same with --allow-other, where the kernel keeps only the
	// entries every user sees (the images are public).
	args := m.Args
	m.Args = append(slices.Clone(args), "--allow-other")
	m.remount()
	v, ref = interleave(lsl(view), lsl(links))
	tab.add(figure{name: fmt.Sprintf("the same `ls -l`, mount with --allow-other, %d links of public images", n), unit: "s",
		value: v, refName: fmt.Sprintf("local dir of %d symlinks", n), ref: ref, target: 2,
		note: "entries of public images are shared by all users, so the kernel keeps them"})
	m.Args = args
	m.remount()

	lsProp := func() time.Duration {
		start := time.Now()
		r := execCmd(binary, "ls", m.Mnt, "--property", "visibility=public", "--json")
		if r.err != nil || strings.Count(r.stdout, `"name"`) != n {
			t.Fatalf("imagefs ls --property visibility=public: %d rows: %s", strings.Count(r.stdout, `"name"`), r.stderr)
		}
		return time.Since(start)
	}
	grep := func() time.Duration {
		start := time.Now()
		r := execCmd("sh", "-c", `ulimit -s unlimited && cd "$1" && grep -l -x public images/*/properties/visibility | wc -l`, "sh", local)
		if r.err != nil || strings.TrimSpace(r.stdout) != fmt.Sprint(n) {
			t.Fatalf("grep -l: %s", r)
		}
		return time.Since(start)
	}
	v, ref = interleave(lsProp, grep)
	tab.add(figure{name: fmt.Sprintf("`imagefs ls --property visibility=public --json`, %d matches", n), unit: "s",
		value: v, target: 0.2, strict: true, note: "one read of .catalog/by-property/visibility/public"})
	tab.add(figure{name: fmt.Sprintf("the same `imagefs ls` against a local `grep -l -x public images/*/properties/visibility`, %d files", n), unit: "s",
		value: v, refName: "local grep -l", ref: ref, info: true, note: "for comparison"})

	du := func(dir string) func() time.Duration {
		return func() time.Duration {
			start := time.Now()
			r := execCmd("du", "-sh", dir)
			if r.err != nil {
				t.Fatalf("du -sh %s: %s", dir, r)
			}
			return time.Since(start)
		}
	}
	v, ref = interleave(du(m.Mnt), du(local))
	r := execCmd("du", "-s", "-B1", filepath.Join(m.Mnt, "by-property"))
	if f := strings.Fields(r.stdout); r.err != nil || len(f) == 0 || f[0] != "0" {
		t.Errorf("du -s by-property/ = %q, want 0 bytes: the links have no blocks", r.stdout)
	}
	keys := dirNames(t, filepath.Join(m.Mnt, "by-property"))
	tab.add(figure{name: fmt.Sprintf("`du -sh MOUNTPOINT`, %d images", n), unit: "s", value: v, target: 10, strict: true,
		note: fmt.Sprintf("by-property/ (%d keys, a link per image and key) counts 0 bytes; du -sh of the local tree (the properties and one view): %s",
			len(keys), fmtValue(ref, "s"))})
	var bp []float64
	for range *benchRuns {
		bp = append(bp, du(filepath.Join(m.Mnt, "by-property"))().Seconds())
	}
	tab.add(figure{name: fmt.Sprintf("the same du, `by-property/` alone (%d links)", n*len(keys)), unit: "s", value: median(bp), info: true,
		note: "the part of the views; the rest is images/ and by-id/"})
	m.stop()
}
