package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// Tests of issue #12 item 3: data not yet sealed (scratch files: cp into
// the directory, qemu-img convert and rsync targets, a writer still
// writing; and image.vhd being uploaded) is read by no one but the owner
// and root, in shared, public and community images alike; other users who
// see the image get EACCES.

// startAs starts a shell script as uid in its own process group; the
// returned function (also run at the end of the test) kills that group
// and waits for it.
func startAs(t *testing.T, uid, script string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command("setpriv", append(testutil.SetprivArgs(uid, false), append([]string{"sh", "-c", script, "sh"}, args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestScratchUnreadableByOthers: in a shared, a public and a community
// image of uid 1001, the scratch files left by cp FILE images/NAME/ and
// qemu-img convert, an rsync temporary file and a scratch file still being
// written, and image.vhd being uploaded, are refused to the users who see
// the image (EACCES), by name or by id; the owner reads the scratch files.
func TestScratchUnreadableByOthers(t *testing.T) {
	requireTools(t, "cp", "rsync", "qemu-img", "head")
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	big := makeVHD(t, 16*mib, "fixed") // rsync at 1 MiB/s: its temporary file lives for seconds
	if err := os.Chmod(big.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	chmodPathForOthers(t, big.Path)
	A, B, C := a.as(userA), a.as(userB), a.as(userC)

	type image struct {
		name    string
		grant   func(name string)
		readers []actor
		byID    bool // the readers reach it by id only
	}
	images := []image{
		{"sc-shared", func(name string) {
			A.must("write", a.propFile(name, "visibility"), "shared\n")
			A.must("write", a.propFile(name, "members"), userB+"\n")
			a.acceptAs(t, userB, name)
		}, []actor{B}, false},
		{"sc-public", func(name string) {
			if err := os.WriteFile(a.propFile(name, "visibility"), []byte("public\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []actor{B, C}, false},
		{"sc-community", func(name string) {
			A.must("write", a.propFile(name, "visibility"), "community\n")
		}, []actor{B, C}, true},
	}
	for _, im := range images {
		A.must("mkdir", a.images(im.name))
		im.grant(im.name)
		dir := a.images(im.name)
		readerDir := dir
		if im.byID {
			readerDir = a.byID(a.prop(im.name, "id"))
		}
		refused := func(kind, file string, ownerReads bool) {
			t.Helper()
			want := syscall.EACCES
			if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
				want = syscall.ENOENT // not left as a scratch file
			} else if im.byID && file == "image.vhd" {
				want = syscall.ENOENT // by-id/<id>/image.vhd exists once sealed
			} else if ownerReads {
				A.must("read", filepath.Join(dir, file))
			}
			for _, u := range im.readers {
				if r := u.do("read", filepath.Join(readerDir, file)); r.errno != want {
					t.Errorf("%s: %s: %s of %s: read %s: %s (%d bytes), want %v", im.name, kind, u.name(), file, filepath.Join(readerDir, file), r, len(r.out), want)
				}
			}
		}

		// cp and qemu-img convert to a scratch (temporary) name: a file
		// under any other name is an upload of the image's data.
		mustAsUser(t, userA, `cp "$1" "$2/.copy.vhd"`, fx.Path, dir)
		refused("cp FILE images/NAME/.copy.vhd", ".copy.vhd", true)
		mustAsUser(t, userA, `qemu-img convert -f vpc -O vpc "$1" "$2/.converted.vhd"`, fx.Path, dir)
		refused("qemu-img convert", ".converted.vhd", true)

		// A scratch file and image.vhd still being written.
		stopScratch := startAs(t, userA, `{ head -c 1048576 "$1"; sleep 60; } > "$2/.partial.vhd"`, big.Path, dir)
		stopUpload := startAs(t, userA, `{ head -c 1048576 "$1"; sleep 60; } > "$2/image.vhd"`, big.Path, dir)
		for _, f := range []string{".partial.vhd", "image.vhd"} {
			waitFor(t, im.name+"/"+f+" to hold 1 MiB", func() bool {
				fi, err := os.Stat(filepath.Join(dir, f))
				return err == nil && fi.Size() >= 1<<20
			})
		}
		refused("a writer writing", ".partial.vhd", true)
		refused("an upload of image.vhd", "image.vhd", false)
		stopScratch()
		stopUpload()

		// rsync's temporary file.
		stopRsync := startAs(t, userA, `exec rsync --bwlimit=1024 "$1" "$2/"`, big.Path, dir)
		var tmp string
		waitFor(t, "rsync's temporary file in "+im.name, func() bool {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "."+filepath.Base(big.Path)+".") {
					if fi, err := e.Info(); err == nil && fi.Size() > 0 {
						tmp = e.Name()
						return true
					}
				}
			}
			return false
		})
		refused("rsync", tmp, true)
		stopRsync()
	}
}
