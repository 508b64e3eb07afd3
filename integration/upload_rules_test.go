package integration

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The upload's rules (issues #12 and #13): an unlink that races a seal,
// files copied into an image directory under their own names, one writer
// at a time for renames too, empty uploads, kill reasons, staging files.

// stagingFiles returns the names in STORE/staging.
func stagingFiles(t testing.TB, m *fsMount) []string {
	t.Helper()
	return dirNames(t, filepath.Join(m.Store, "staging"))
}

// checkDataInBothTrees asserts that an active image shows image.vhd under
// images/<name>/ and by-id/<id>/, stat and listing alike.
func checkDataInBothTrees(t testing.TB, m *fsMount, name, id, what string) {
	t.Helper()
	for _, p := range []string{m.dataFile(name), m.byID(id, "image.vhd")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: active image: stat %s: %v", what, p[len(m.Mnt):], err)
		}
		ents, err := os.ReadDir(filepath.Dir(p))
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		found := false
		for _, e := range ents {
			found = found || e.Name() == "image.vhd"
		}
		if !found {
			t.Errorf("%s: active image: %s does not list image.vhd", what, filepath.Dir(p)[len(m.Mnt):])
		}
	}
}

// TestUnlinkDuringSeal (#12.4): a writer (a child process that inherited
// the descriptor) closes image.vhd, which seals the image at its RELEASE,
// while unlinks of image.vhd keep arriving. Each unlink fails (EBUSY
// before the seal, EPERM after); the active image keeps its image.vhd in
// both trees, now and after a remount.
func TestUnlinkDuringSeal(t *testing.T) {
	m := mount(t)
	requireTools(t, "cat", "sh")
	fx := makeVHD(t, 48*mib, "fixed")
	for round := range 3 {
		name := "race" + strconv.Itoa(round)
		id := m.mkimage(name)
		// The test process opens (without O_TRUNC, so its own close seals
		// nothing) and hands the descriptor to a child that writes and
		// closes last: the seal runs at that RELEASE. The child writes
		// only after the test process has closed its copy: a close (FLUSH)
		// that comes after data was written ends the upload.
		f, err := os.OpenFile(m.dataFile(name), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		child := exec.Command("sh", "-c", `read go && cat "$1" >&3 && read x; exec 3>&-`, "sh", fx.Path)
		child.ExtraFiles = []*os.File{f}
		stdin, err := child.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := io.WriteString(stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		// Wait for the data, then let the child close while unlinks run.
		deadline := time.Now().Add(30 * time.Second)
		for fileSize(t, m.dataFile(name)) < fx.Size && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		counts := map[syscall.Errno]int{}
		var mu sync.Mutex
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					err := syscall.Unlink(m.dataFile(name))
					mu.Lock()
					counts[errnoOf(err)]++
					mu.Unlock()
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		stdin.Close()
		if err := child.Wait(); err != nil {
			t.Errorf("child writer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("round %d: unlink results %v", round, counts)
		if counts[0] != 0 {
			t.Errorf("round %d: %d unlinks succeeded while a writer had the file open", round, counts[0])
		}
		if got := m.prop(name, "status"); got != "active" {
			t.Fatalf("round %d: status %q, want active", round, got)
		}
		checkDataInBothTrees(t, m, name, id, "round "+strconv.Itoa(round))
		cmp(t, fx.Path, m.byID(id, "image.vhd"))
	}
	m.remount()
	for round := range 3 {
		name := "race" + strconv.Itoa(round)
		checkDataInBothTrees(t, m, name, m.prop(name, "id"), "after remount")
	}
}

// TestUploadRenameUnlinkRounds (#12.4): rounds of a cp onto image.vhd, an
// rsync-style temporary file renamed onto it and rm -f of it, all at once.
// Whatever wins, an image that ends active has its image.vhd in both
// trees and its data is one of the uploads.
func TestUploadRenameUnlinkRounds(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "mv", "rm")
	fx := makeVHD(t, 3*mib, "dynamic")
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	active := 0
	for round := range rounds {
		name := "r" + strconv.Itoa(round)
		id := m.mkimage(name)
		tmp := m.images(name, ".up.tmp")
		var wg sync.WaitGroup
		for _, script := range []string{
			`cp "$1" "$2"`,
			`cp "$1" "$3" && mv "$3" "$2"`,
			`rm -f "$2"; rm -f "$2"; rm -f "$2"`,
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				shErr(script, fx.Path, m.dataFile(name), tmp)
			}()
		}
		wg.Wait()
		if m.prop(name, "status") == "active" {
			active++
			checkDataInBothTrees(t, m, name, id, "round "+strconv.Itoa(round))
			if got := m.prop(name, "checksum"); got != fx.MD5 {
				t.Errorf("round %d: checksum %s, want %s", round, got, fx.MD5)
			}
		}
	}
	t.Logf("%d of %d rounds ended active", active, rounds)
}

// TestCopyIntoImageDir (#13.2): cp FILE.vhd images/NAME/ and rsync -a
// FILE.vhd images/NAME/ upload FILE.vhd as the image's data: the tool
// exits 0, the image is active with the file's bytes, and the directory
// lists image.vhd (not FILE.vhd), also after a remount. Into a sealed
// image both fail at once (EPERM at the create) and change nothing.
func TestCopyIntoImageDir(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "rsync", "cmp")
	fx := makeVHD(t, 4*mib, "dynamic")
	fx2 := makeVHD(t, 3*mib, "fixed")
	for _, tool := range []string{"cp", "rsync"} {
		t.Run(tool, func(t *testing.T) {
			name := "dir-" + tool
			id := m.mkimage(name)
			var r result
			if tool == "cp" {
				r = execCmd("cp", fx.Path, m.images(name)+"/")
			} else {
				r = execCmd("rsync", "-a", fx.Path, m.images(name)+"/")
			}
			if r.err != nil {
				t.Fatalf("%s FILE images/%s/: %s", tool, name, r)
			}
			m.checkSealed(t, name, fx)
			if got := strings.Join(dirNames(t, m.images(name)), " "); got != "image.vhd properties" {
				t.Errorf("images/%s lists %q, want image.vhd and properties", name, got)
			}
			cmp(t, fx.Path, m.byID(id, "image.vhd"))
			if n := stagingFiles(t, m); len(n) != 0 {
				t.Errorf("staging holds %v after the upload", n)
			}

			// Again into the sealed image: refused at the create.
			if tool == "cp" {
				r = execCmd("cp", fx2.Path, m.images(name)+"/")
			} else {
				r = execCmd("rsync", "-a", fx2.Path, m.images(name)+"/")
			}
			if r.err == nil {
				t.Errorf("%s of another file into the sealed images/%s/ exited 0", tool, name)
			}
			if !strings.Contains(r.stderr, "Operation not permitted") {
				t.Errorf("%s into a sealed image: stderr %q does not say EPERM", tool, r.stderr)
			}
			m.checkSealed(t, name, fx)
		})
	}
	wantErrno(t, "create a file in a sealed image directory",
		createFile(m.images("dir-cp", "other.vhd")), syscall.EPERM)

	// A second writer while an upload is open: EBUSY at the create.
	m.mkimage("busy")
	f, err := os.OpenFile(m.dataFile("busy"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "create a file while image.vhd is being uploaded", createFile(m.images("busy", "x.vhd")), syscall.EBUSY)
	f.Close()

	m.remount()
	for _, name := range []string{"dir-cp", "dir-rsync"} {
		if got := m.prop(name, "status"); got != "active" {
			t.Errorf("%s after remount: status %s", name, got)
		}
		checkDataInBothTrees(t, m, name, m.prop(name, "id"), name+" after remount")
	}
}

func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil {
		f.Close()
	}
	return err
}

// TestRenameOntoImageDataDuringUpload (#13.8): a rename onto image.vhd
// while another writer's upload is open fails with EBUSY and leaves that
// upload alone: the first writer's close seals its data.
func TestRenameOntoImageDataDuringUpload(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 3*mib, "fixed")
	other := makeVHD(t, 2*mib, "fixed")
	m.mkimage("one")
	b, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.dataFile("one"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	tmp := m.images("one", ".other.tmp")
	copyFile(t, other.Path, tmp)
	wantErrno(t, "rename onto image.vhd during another upload", os.Rename(tmp, m.dataFile("one")), syscall.EBUSY)
	wantErrno(t, "rename onto a new name during another upload", os.Rename(tmp, m.images("one", "other.vhd")), syscall.EBUSY)
	if r := execCmd("mv", tmp, m.dataFile("one")); r.err == nil {
		t.Errorf("mv onto image.vhd during another upload exited 0")
	}
	if _, err := f.Write(b[len(b)/2:]); err != nil {
		t.Fatalf("the first writer's write after the refused rename: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("the first writer's close: %v", err)
	}
	m.checkSealed(t, "one", fx)
}

// TestEmptyUpload (#13.10): cp of an empty file, `: >` and truncate -s 0
// onto image.vhd kill the image with the reason "upload empty", and no
// staging file is left; touch of a queued image.vhd leaves it queued and
// no staging file either.
func TestEmptyUpload(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "truncate", "touch", "sh")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, script string }{
		{"cp", `cp "$2" "$1"`},
		{"redirect", `: > "$1"`},
		{"truncate", `truncate -s 0 "$1"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m.mkimage(c.name)
			r := shErr(c.script, m.dataFile(c.name), empty)
			t.Logf("%s: %s", c.script, r)
			// The kill comes at the last close (RELEASE), which the
			// kernel sends once close(2) has returned.
			waitStatus(t, m, c.name, "killed")
			reason := m.checkKilled(t, c.name)
			if !strings.HasPrefix(reason, "upload empty") {
				t.Errorf("kill reason %q, want it to start with \"upload empty\"", reason)
			}
			if n := stagingFiles(t, m); len(n) != 0 {
				t.Errorf("staging holds %v after an empty upload", n)
			}
		})
	}
	m.mkimage("touched")
	run(t, "touch", m.dataFile("touched"))
	if got := m.prop("touched", "status"); got != "queued" {
		t.Errorf("touch image.vhd: status %s, want queued", got)
	}
	if n := stagingFiles(t, m); len(n) != 0 {
		t.Errorf("staging holds %v after touch", n)
	}
}

// TestKillReasons (#13.7): the kill reason says what happened: a cp
// killed mid-copy (upload incomplete), data in another disk format (what
// it is), raw data, a truncated dynamic VHD, a full disk.
func TestKillReasons(t *testing.T) {
	m := mount(t)
	requireTools(t, "qemu-img", "cp", "sh")
	dir := t.TempDir()
	raw := rawDisk(t, 2*mib, 7)
	formats := map[string]string{}
	for _, f := range []string{"qcow2", "vmdk", "vhdx"} {
		p := filepath.Join(dir, "disk."+f)
		run(t, "qemu-img", "convert", "-f", "raw", "-O", f, raw, p)
		formats[f] = p
	}
	iso := make([]byte, 64<<10)
	copy(iso[0x8001:], "CD001")
	formats["iso"] = filepath.Join(dir, "disk.iso")
	if err := os.WriteFile(formats["iso"], iso, 0o644); err != nil {
		t.Fatal(err)
	}
	formats["raw"] = raw
	want := map[string]string{
		"qcow2": "not a VHD: this is a qcow2 image",
		"vmdk":  "not a VHD: this is a VMDK image",
		"vhdx":  "not a VHD: this is a VHDX image",
		"iso":   "not a VHD: this is an ISO 9660 image",
		"raw":   "upload incomplete or not a VHD: no VHD footer",
	}
	for f, p := range formats {
		t.Run(f, func(t *testing.T) {
			reason := cpRefused(t, m, "fmt-"+f, p, "not-vhd")
			if !strings.HasPrefix(reason, want[f]) {
				t.Errorf("kill reason %q, want it to start with %q", reason, want[f])
			}
		})
	}
	t.Run("truncated-dynamic", func(t *testing.T) {
		fx := makeVHD(t, 4*mib, "dynamic")
		short := filepath.Join(t.TempDir(), "short.vhd")
		sh(t, `head -c "$1" "$2" > "$3"`, strconv.FormatInt(fx.Size/2, 10), fx.Path, short)
		reason := cpRefused(t, m, "short", short, "footer-missing")
		if !strings.HasPrefix(reason, "upload incomplete: no VHD footer at the end") {
			t.Errorf("kill reason %q, want upload incomplete", reason)
		}
	})
	t.Run("killed-cp", func(t *testing.T) {
		// A fixed VHD whose beginning is all there: only its missing
		// footer (or the writer's death) says it is cut short.
		fx := makeVHD(t, 64*mib, "fixed")
		m.mkimage("killed")
		// cp reads from a pipe that gets the first 4 MiB, then nothing:
		// it is mid-copy when SIGKILL comes.
		b, err := os.ReadFile(fx.Path)
		if err != nil {
			t.Fatal(err)
		}
		cp := exec.Command("cp", "/dev/stdin", m.dataFile("killed"))
		in, err := cp.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Write(b[:4*mib]); err != nil {
			t.Fatal(err)
		}
		for fileSize(t, m.dataFile("killed")) < 4*mib {
			time.Sleep(10 * time.Millisecond)
		}
		cp.Process.Kill()
		cp.Wait()
		in.Close()
		waitStatus(t, m, "killed", "killed")
		reason := m.checkKilled(t, "killed")
		if !strings.HasPrefix(reason, "upload incomplete") {
			t.Errorf("kill reason %q after a SIGKILL mid-copy, want upload incomplete", reason)
		}
		if !strings.Contains(reason, "signal 9") {
			t.Errorf("kill reason %q does not say the writer was killed (signal 9)", reason)
		}
		if n := stagingFiles(t, m); len(n) != 0 {
			t.Errorf("staging holds %v after the killed upload", n)
		}
	})
	t.Run("writer-exits-holding-the-file", func(t *testing.T) {
		// A writer that exits without closing the file: with a failure
		// status its upload is incomplete even though its bytes are a
		// whole VHD; with status 0 it is sealed.
		requireTools(t, "python3")
		fx := makeVHD(t, 2*mib, "fixed")
		script := `import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, open(sys.argv[2], "rb").read())
os._exit(int(sys.argv[3]))
`
		m.mkimage("exit1")
		execCmd("python3", "-c", script, m.dataFile("exit1"), fx.Path, "1")
		waitStatus(t, m, "exit1", "killed")
		if reason := m.checkKilled(t, "exit1"); !strings.HasPrefix(reason, "upload incomplete: the writer exited with status 1") {
			t.Errorf("kill reason %q, want the writer's exit status", reason)
		}
		m.mkimage("exit0")
		execCmd("python3", "-c", script, m.dataFile("exit0"), fx.Path, "0")
		waitStatus(t, m, "exit0", "active")
		m.checkSealed(t, "exit0", fx)
	})
	t.Run("no-space", func(t *testing.T) {
		big := makeVHD(t, 80*mib, "fixed")
		tmpfsStore(t, m, "64m")
		m.mkimage("full")
		r := execCmd("cp", big.Path, m.dataFile("full"))
		if r.err == nil || !strings.Contains(r.stderr, "No space left on device") {
			t.Errorf("cp onto a full store: %s", r)
		}
		reason := m.checkKilled(t, "full")
		if !strings.HasPrefix(reason, "no space left on device during the upload") {
			t.Errorf("kill reason %q after ENOSPC, want no space left", reason)
		}
		if n := stagingFiles(t, m); len(n) != 0 {
			t.Errorf("staging holds %v after the refused upload", n)
		}
	})
}

// TestVHDSizeMiBAlignedIsAFact (#13.18): a qemu-made VHD whose size is not
// a whole number of MiB is not warned about; vhd_size_mib_aligned says
// false, and true for an aligned one.
func TestVHDSizeMiBAlignedIsAFact(t *testing.T) {
	m := mount(t)
	samples := sampleDir(t)
	m.mkimage("qemu")
	run(t, "cp", filepath.Join(samples, "qemu.vhd"), m.dataFile("qemu"))
	if got := m.prop("qemu", "vhd_size_mib_aligned"); got != "false" {
		t.Errorf("qemu.vhd: vhd_size_mib_aligned = %q, want false", got)
	}
	if w, err := os.ReadFile(m.propFile("qemu", "vhd_warnings")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("qemu.vhd: vhd_warnings = %q (%v), want none", w, err)
	}
	m.mkimage("win8")
	run(t, "cp", filepath.Join(samples, "win8.vhd"), m.dataFile("win8"))
	if got := m.prop("win8", "vhd_size_mib_aligned"); got != "true" {
		t.Errorf("win8.vhd: vhd_size_mib_aligned = %q, want true", got)
	}
}

// waitStatus waits up to 5 s for images/<name> to reach status want.
func waitStatus(t testing.TB, m *fsMount, name, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.prop(name, "status") != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestQemuImgConvertIntoMount (#13.3): qemu-img convert -O vpc straight
// into the mount (image.vhd, or a new name in the image directory), fixed
// and dynamic, as root and as the image's non-root owner: qemu-img writes
// the headers, closes (a provisional seal), opens again and writes the
// data. It exits 0 and the image is active with the right disk: qemu-img
// compare against the source, and the same bytes as a local conversion.
func TestQemuImgConvertIntoMount(t *testing.T) {
	a := mountAllowOther(t)
	requireTools(t, "qemu-img")
	raw := rawDisk(t, 7*mib+3*512, 42)
	if err := os.Chmod(raw, 0o644); err != nil {
		t.Fatal(err)
	}
	chmodPathForOthers(t, raw)
	for _, sub := range []string{"fixed", "dynamic"} {
		local := convertVHD(t, raw, sub)
		for _, target := range []string{"image.vhd", "disk.vhd"} {
			for _, uid := range []string{"0", userA} {
				name := "q-" + sub + "-" + strings.TrimSuffix(target, ".vhd") + "-" + uid
				t.Run(name, func(t *testing.T) {
					script := `mkdir "$1" && qemu-img convert -f raw -O vpc ` + map[string]string{"fixed": "-o subformat=fixed ", "dynamic": ""}[sub] + `"$2" "$1/$3"`
					if r := asUser(uid, script, a.images(name), raw, target); r.err != nil {
						t.Fatalf("as uid %s: qemu-img convert into images/%s/%s: %s (status %s, kill reason %q)", uid, name, target, r,
							readOptional(a.propFile(name, "status")), readOptional(a.propFile(name, "imagefs_kill_reason")))
					}
					if got := a.prop(name, "status"); got != "active" {
						t.Fatalf("status %q after qemu-img convert exited 0, want active", got)
					}
					id := a.prop(name, "id")
					run(t, "qemu-img", "compare", "-f", "raw", "-F", "vpc", raw, a.byID(id, "image.vhd"))
					if got := a.prop(name, "virtual_size"); got != strconv.FormatInt(local.VirtualSize, 10) {
						t.Errorf("virtual_size %s, want %d", got, local.VirtualSize)
					}
					if got := a.prop(name, "vhd_disk_type"); got != sub {
						t.Errorf("vhd_disk_type %s, want %s", got, sub)
					}
					if got := a.prop(name, "size"); got != strconv.FormatInt(local.Size, 10) {
						t.Errorf("size %s, local conversion %d", got, local.Size)
					}
					if got, want := a.prop(name, "checksum"), md5sum(t, a.byID(id, "image.vhd")); got != want {
						t.Errorf("checksum %s, md5sum of the data %s", got, want)
					}
					// Once qemu-img has exited the seal is final: 0444, EPERM.
					var st syscall.Stat_t
					if err := syscall.Stat(a.dataFile(name), &st); err != nil || st.Mode&0o777 != 0o444 {
						t.Errorf("image.vhd after qemu-img exited: mode %o (%v), want 0444", st.Mode&0o777, err)
					}
					wantErrno(t, "open the sealed image for writing", openWrite(a.dataFile(name)), syscall.EPERM)
					if got := strings.Join(dirNames(t, a.images(name)), " "); got != "image.vhd properties" {
						t.Errorf("images/%s lists %q", name, got)
					}
					if n := stagingFiles(t, a.fsMount); len(n) != 0 {
						t.Errorf("staging holds %v", n)
					}
				})
			}
		}
	}
}

func openWrite(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	return err
}

// TestReopenAfterAnotherReader (#13.3): while a seal is provisional its
// data is its writer's only: another process's open of image.vhd is
// refused (EACCES), by-id/<id>/ does not list it (ENOENT), the writer
// itself reads it, and the writer's reopen for writing continues the
// upload; once the writer exits, the image is active with its data.
func TestReopenAfterAnotherReader(t *testing.T) {
	m := mount(t)
	requireTools(t, "cat", "python3")
	fx := makeVHD(t, 2*mib, "fixed")
	m.mkimage("re")
	// One process: write the VHD read-write, close, let a reader try,
	// read it itself, open again for writing.
	script := `import os, subprocess, sys
p, src, byid = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, "rb").read()
fd = os.open(p, os.O_RDWR | os.O_TRUNC)
os.write(fd, data)
os.close(fd)
r = subprocess.run(["cat", p], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print("reader:", r.returncode, r.stderr.strip())
print("by-id:", os.path.exists(byid))
with open(p, "rb") as f:
    print("writer reads its data:", f.read() == data)
fd = os.open(p, os.O_RDWR)
os.close(fd)
print("reopened")
`
	id := m.prop("re", "id")
	r := execCmd("python3", "-c", script, m.dataFile("re"), fx.Path, m.byID(id, "image.vhd"))
	if r.code != 0 {
		t.Fatalf("writer: %s", r)
	}
	for _, want := range []string{"reader: 1 cat: " + m.dataFile("re") + ": Permission denied", "by-id: False", "writer reads its data: True", "reopened"} {
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("writer's output %q lacks %q", r.stdout, want)
		}
	}
	m.checkSealed(t, "re", fx)
	if _, err := os.Stat(m.propFile("re", "imagefs_deactivate_reason")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("imagefs_deactivate_reason: %v", err)
	}
}

// TestQemuImgConvertFailsIntoMount (#13.3): a qemu-img convert into the
// mount that fails after its headers were sealed (a read error on the
// source, injected with qemu's blkdebug driver; qemu-img closes its
// output, then exits 1) leaves no bootable image: the image ends
// deactivated, imagefs_deactivate_reason says the writer exited with
// status 1 (deactivated: only root reads it).
func TestQemuImgConvertFailsIntoMount(t *testing.T) {
	m := mount(t)
	requireTools(t, "qemu-img")
	raw := rawDisk(t, 4*mib, 43)
	conf := filepath.Join(t.TempDir(), "blkdebug.conf")
	if err := os.WriteFile(conf, []byte("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"fixed", "dynamic"} {
		t.Run(sub, func(t *testing.T) {
			name := "fail-" + sub
			m.mkimage(name)
			args := []string{"convert", "-f", "raw", "-O", "vpc"}
			if sub == "fixed" {
				args = append(args, "-o", "subformat=fixed")
			}
			r := execCmd("qemu-img", append(args, "blkdebug:"+conf+":"+raw, m.dataFile(name))...)
			if r.code != 1 || !strings.Contains(r.stderr, "Input/output error") {
				t.Fatalf("qemu-img convert from a failing source: %s, want exit 1 with an I/O error", r)
			}
			deadline := time.Now().Add(5 * time.Second)
			for m.prop(name, "status") == "active" && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := m.prop(name, "status"); got == "active" || got == "saving" {
				t.Fatalf("status %q after qemu-img failed: the image stays bootable", got)
			}
			t.Logf("status %s", m.prop(name, "status"))
			if reason := readOptional(m.propFile(name, "imagefs_deactivate_reason")); !strings.Contains(reason, "exited with status 1") {
				t.Errorf("imagefs_deactivate_reason %q, want it to say the writer exited with status 1", reason)
			}
		})
	}
}

// TestReopenAfterWindow (#13.3): a seal at a read-write opener's close is
// provisional for 10 s at most: the same process opening image.vhd for
// writing later gets EPERM and the image stays active, unchanged.
func TestReopenAfterWindow(t *testing.T) {
	m := mount(t)
	requireTools(t, "python3")
	fx := makeVHD(t, 2*mib, "fixed")
	m.mkimage("late")
	script := `import os, sys, time
p, src = sys.argv[1], sys.argv[2]
fd = os.open(p, os.O_RDWR | os.O_TRUNC)
os.write(fd, open(src, "rb").read())
os.close(fd)
print(oct(os.stat(p).st_mode & 0o777))
time.sleep(11)
print(oct(os.stat(p).st_mode & 0o777))
try:
    os.close(os.open(p, os.O_RDWR))
except PermissionError as e:
    print("refused:", e.errno)
    sys.exit(3)
`
	r := execCmd("python3", "-c", script, m.dataFile("late"), fx.Path)
	if r.code != 3 || r.stdout != "0o644\n0o444\nrefused: 1\n" {
		t.Errorf("reopen 11 s after the seal: %s, want 0644 at once, 0444 after the window, then EPERM", r)
	}
	m.checkSealed(t, "late", fx)
}
