package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// storeModes lists the entries of the store whose mode is not the private
// one (directories 0700, data files 0400, other files 0600), as
// "path mode".
func storeModes(t *testing.T, store string) []string {
	t.Helper()
	var bad []string
	err := filepath.WalkDir(store, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		switch {
		case e.IsDir():
			want = 0o700
		case strings.HasSuffix(path, ".vhd"):
			want = 0o400
		}
		if fi.Mode().Perm() != want {
			bad = append(bad, path+" "+fi.Mode().String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// loosenStore gives the store the modes an older imagefs created: 0755
// directories, 0644 catalog files, 0444 data, with chmod(1).
func loosenStore(t *testing.T, store string) {
	t.Helper()
	sh(t, `find "$1" -type d -exec chmod 0755 {} + &&
		find "$1" -type f -name '*.vhd' -exec chmod 0444 {} + &&
		find "$1" -type f ! -name '*.vhd' -exec chmod 0644 {} +`, store)
}

// TestStorePrivate: no other local user reads the store outside the mount
// (STORE/data/<id>.vhd, the catalog with every property); a store an older
// imagefs left readable is tightened at mount, with one log line; fsck
// reports such a store (exit 3: --repair fixes it) and --repair fixes it.
func TestStorePrivate(t *testing.T) {
	embeddedCatalogOnly(t, "the modes of the embedded catalog's files (STORE/catalog); a shared STORE has none")
	requireTools(t, "setpriv", "find", "chmod")
	m := mount(t)
	u := actor{t: t, helper: testutil.SysHelper(t), uid: userA}
	chmodPathForOthers(t, m.Store) // only the store's own modes keep others out
	fx := makeVHD(t, 3*mib, "dynamic")
	id := m.mkimage("secret")
	run(t, "cp", fx.Path, m.dataFile("secret"))
	sh(t, `echo hunter2-canary > "$1"`, m.propFile("secret", "admin_note"))

	catalogFiles := func() []string {
		ents, err := os.ReadDir(filepath.Join(m.Store, "catalog"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, filepath.Join(m.Store, "catalog", e.Name()))
		}
		return out
	}
	// cannotRead checks that uid 1001 reads neither the data nor any
	// catalog file, and cannot list the store.
	cannotRead := func(when string) {
		t.Helper()
		for _, p := range append([]string{m.backing(id)}, catalogFiles()...) {
			if r := u.do("read", p); r.errno != syscall.EACCES {
				t.Errorf("%s: uid %s reads %s: %s, want EACCES", when, userA, p, r)
			}
		}
		for _, d := range []string{m.Store, filepath.Join(m.Store, "data"), filepath.Join(m.Store, "catalog")} {
			if r := u.do("ls", d); r.errno != syscall.EACCES {
				t.Errorf("%s: uid %s lists %s: %s, want EACCES", when, userA, d, r)
			}
		}
	}

	// A new store: private from the start (nothing to tighten), while
	// mounted (Pebble's files included) and after a clean stop.
	if strings.Contains(string(readFile(m.log)), "store-mode") {
		t.Errorf("a new store needed tightening at its first mount:\n%s", readFile(m.log))
	}
	if bad := storeModes(t, m.Store); len(bad) > 0 {
		t.Errorf("a new store, mounted, has modes others can use:\n%s", strings.Join(bad, "\n"))
	}
	cannotRead("mounted")
	m.stop()
	if bad := storeModes(t, m.Store); len(bad) > 0 {
		t.Errorf("a new store, after the unmount:\n%s", strings.Join(bad, "\n"))
	}
	cannotRead("unmounted")
	// Root (the daemon's user) still reads the data.
	cmp(t, fx.Path, m.backing(id))

	// A store as an older imagefs left it: others read the bytes.
	loosenStore(t, m.Store)
	if got := u.must("read", m.backing(id)); got != string(readFile(fx.Path)) {
		t.Fatalf("uid %s read %d bytes of the loose store's data file", userA, len(got))
	}
	r := execCmd(binary, fsckCmd(m.Store)...)
	if r.code != 3 || !strings.Contains(r.stdout, "store-mode: ") || !strings.Contains(r.stdout, "(--repair fixes this)") {
		t.Errorf("fsck of a store others can read: want exit 3 reporting store-mode as repairable, got %s", r)
	}
	if bad := storeModes(t, m.Store); len(bad) == 0 {
		t.Errorf("fsck without --repair changed the modes")
	}

	// The mount tightens it, with one log line saying what it did.
	before := len(readFile(m.log))
	m.start()
	var lines []string
	for _, l := range strings.Split(string(readFile(m.log)[before:]), "\n") {
		if strings.Contains(l, "store-mode") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "directories (want 0700)") || !strings.Contains(lines[0], "1 data files (want 0400)") {
		t.Errorf("want one log line saying what was tightened, got %q", lines)
	}
	if bad := storeModes(t, m.Store); len(bad) > 0 {
		t.Errorf("a loose store after the mount:\n%s", strings.Join(bad, "\n"))
	}
	cannotRead("tightened at mount")
	if got := m.prop("secret", "admin_note"); got != "hunter2-canary" {
		t.Errorf("admin_note after the mount tightened the store: %q", got)
	}
	cmp(t, fx.Path, m.dataFile("secret"))
	m.stop()

	// fsck --repair tightens it too.
	loosenStore(t, m.Store)
	r = execCmd(binary, fsckCmd("--repair", m.Store)...)
	if r.code != 0 || !strings.Contains(r.stdout, "store-mode: ") || !strings.Contains(r.stdout, "(repaired)") {
		t.Errorf("fsck --repair of a store others can read: want exit 0, store-mode repaired, got %s", r)
	}
	if bad := storeModes(t, m.Store); len(bad) > 0 {
		t.Errorf("a loose store after fsck --repair:\n%s", strings.Join(bad, "\n"))
	}
	cannotRead("after fsck --repair")
	if r := execCmd(binary, fsckCmd(m.Store)...); r.code != 0 || !strings.Contains(r.stdout, "0 problems") {
		t.Errorf("fsck after --repair: %s", r)
	}
}

// TestInterruptedDeleteCleanedAtMount: the delete of an image commits
// and the daemon dies before its data file is removed (here the data file
// is immutable, chattr +i, so the removal fails; then SIGKILL). The next
// mount removes that data instead of moving it to lost+found, which keeps
// only data no record explains; fsck says what lost+found holds.
func TestInterruptedDeleteCleanedAtMount(t *testing.T) {
	embeddedCatalogOnly(t, "orphan data in a shared data directory waits out a 10-minute grace and goes to DATA/lost+found (store TestCheckShared covers it)")
	requireTools(t, "chattr", "rmdir")
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	id := m.mkimage("doomed")
	run(t, "cp", fx.Path, m.dataFile("doomed"))
	if r := execCmd("chattr", "+i", m.backing(id)); r.err != nil {
		t.Skipf("chattr +i on the store's filesystem: %s", r)
	}
	t.Cleanup(func() { execCmd("chattr", "-i", m.backing(id)) })
	run(t, "rmdir", m.images("doomed"))
	if _, err := os.Stat(m.backing(id)); err != nil {
		t.Fatalf("the data file should still be there (immutable): %v", err)
	}
	m.crash()
	run(t, "chattr", "-i", m.backing(id))

	r := execCmd(binary, fsckCmd(m.Store)...)
	if r.code != 3 || !strings.Contains(r.stdout, "deleted-data: "+id) {
		t.Errorf("fsck after an interrupted delete: want exit 3 with deleted-data, got %s", r)
	}
	m.start()
	if _, err := os.Stat(m.backing(id)); !os.IsNotExist(err) {
		t.Errorf("STORE/data/%s.vhd after the mount: %v, want it removed", id, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.Store, "lost+found")); len(ents) != 0 {
		t.Errorf("STORE/lost+found holds %v, want nothing", ents)
	}
	if _, err := os.Stat(m.images("doomed")); !os.IsNotExist(err) {
		t.Errorf("images/doomed after the mount: %v", err)
	}
	m.stop()

	// Data no record explains still goes to lost+found, and fsck says
	// how much it holds and how to empty it.
	orphan := filepath.Join(m.Store, "data", "0a0a0a0a-0000-4000-8000-000000000000.vhd")
	copyFile(t, fx.Path, orphan)
	m.start()
	m.stop()
	r = execCmd(binary, fsckCmd(m.Store)...)
	size := fileSize(t, fx.Path)
	lf := filepath.Join(m.Store, "lost+found")
	want := lf + " holds 1 files (" + strconv.FormatInt(size, 10) + " bytes)"
	if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "rm "+lf+"/*.vhd") {
		t.Errorf("fsck with a file in lost+found: want exit 0 and %q with how to empty it, got %s", want, r)
	}
	if rep := fsckJSON(t, m.Store); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck --json: %+v", rep)
	}
}

// TestFsckRepairableExitStatus: plain fsck marks the problems --repair
// fixes and exits 3 when --repair fixes them all; 1 when a problem needs
// the operator (and says which); the help text lists the statuses.
func TestFsckRepairableExitStatus(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	id := m.mkimage("img")
	run(t, "cp", fx.Path, m.dataFile("img"))
	m.stop()

	leftover := filepath.Join(m.Store, "staging", "leftover.1")
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := execCmd(binary, fsckCmd(m.Store)...)
	if r.code != 3 || !strings.Contains(r.stdout, "staging-leftover: leftover.1 (--repair fixes this)") ||
		!strings.Contains(r.stdout, "1 of them fixed by imagefs fsck --repair") || strings.Contains(r.stdout, "need you") {
		t.Errorf("fsck with only repairable problems: want exit 3 and the problem marked, got %s", r)
	}
	rep := fsckJSON(t, m.Store)
	if rep.code != 3 || len(rep.Problems) != 1 || !rep.Problems[0].Repairable {
		t.Errorf("fsck --json with only repairable problems: %+v", rep)
	}

	// A missing data file needs the operator: exit 1, and fsck says which
	// problem is which.
	data := m.backing(id)
	if err := os.Rename(data, data+".away"); err != nil {
		t.Fatal(err)
	}
	r = execCmd(binary, fsckCmd(m.Store)...)
	if r.code != 1 || !strings.Contains(r.stdout, "missing-data: "+id+": the data file is missing\n") ||
		!strings.Contains(r.stdout, "(--repair fixes this)") || !strings.Contains(r.stdout, "1 of them need you") {
		t.Errorf("fsck with a problem --repair cannot fix: want exit 1, got %s", r)
	}
	r = execCmd(binary, fsckCmd("--repair", m.Store)...)
	if r.code != 1 || !strings.Contains(r.stdout, "(repaired)") || !strings.Contains(r.stdout, "1 of them need you") {
		t.Errorf("fsck --repair with a problem it cannot fix: want exit 1, got %s", r)
	}
	if err := os.Rename(data+".away", data); err != nil {
		t.Fatal(err)
	}
	if r := execCmd(binary, fsckCmd(m.Store)...); r.code != 0 {
		t.Errorf("fsck after the data file came back: %s", r)
	}

	r = execCmd(binary, "fsck", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "3  without --repair: problems found, all of which --repair fixes") {
		t.Errorf("fsck --help does not document exit status 3: %s", r)
	}
}
