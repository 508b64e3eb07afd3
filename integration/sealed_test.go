package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestSealedImmutable checks that after sealing every change to image.vhd
// fails with EPERM for root, through both paths, with system calls and
// with the shell tools, that the mode is 0444 (the backing file 0400) and
// that the bytes and checksum do not change.
func TestSealedImmutable(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "cmp", "truncate", "touch")
	fx := makeVHD(t, 6*mib, "fixed")
	id := m.mkimage("sealed")
	// A scratch file made while the upload was still possible; renaming it
	// onto the sealed image.vhd must fail.
	scratch := m.images("sealed", ".late.vhd")
	copyFile(t, fx.Path, scratch)
	run(t, "cp", fx.Path, m.dataFile("sealed"))
	m.checkSealed(t, "sealed", fx)

	for _, p := range []string{m.dataFile("sealed"), m.byID(id, "image.vhd")} {
		t.Run(p[len(m.Mnt)+1:], func(t *testing.T) {
			for _, flags := range []struct {
				name string
				flag int
			}{
				{"O_WRONLY", syscall.O_WRONLY},
				{"O_RDWR", syscall.O_RDWR},
				{"O_WRONLY|O_APPEND", syscall.O_WRONLY | syscall.O_APPEND},
				{"O_WRONLY|O_TRUNC", syscall.O_WRONLY | syscall.O_TRUNC},
				{"O_WRONLY|O_CREAT|O_TRUNC", syscall.O_WRONLY | syscall.O_CREAT | syscall.O_TRUNC},
			} {
				fd, err := syscall.Open(p, flags.flag, 0o644)
				if err == nil {
					syscall.Close(fd)
				}
				wantErrno(t, "open "+flags.name, err, syscall.EPERM)
			}
			wantErrno(t, "truncate 0", syscall.Truncate(p, 0), syscall.EPERM)
			wantErrno(t, "truncate +1", syscall.Truncate(p, fx.Size+1), syscall.EPERM)
			wantErrno(t, "truncate -512", syscall.Truncate(p, fx.Size-512), syscall.EPERM)
			wantErrno(t, "chmod 0644", syscall.Chmod(p, 0o644), syscall.EPERM)
			wantErrno(t, "chmod 0666", syscall.Chmod(p, 0o666), syscall.EPERM)
			wantErrno(t, "chown 1000", syscall.Chown(p, 1000, 1000), syscall.EPERM)
			ts := []syscall.Timespec{{Sec: 1000}, {Sec: 2000}}
			wantErrno(t, "utimes", syscall.UtimesNano(p, ts), syscall.EPERM)
			wantErrno(t, "unlink", syscall.Unlink(p), syscall.EPERM)
			for _, script := range []string{
				`: > "$1"`, `echo x >> "$1"`, `truncate -s 0 "$1"`, `truncate -s +1M "$1"`,
				`chmod 644 "$1"`, `touch "$1"`, `rm -f "$1"`,
			} {
				r := shErr(script, p)
				if r.code == 0 {
					t.Errorf("%s on a sealed image exited 0", script)
				} else if want := "Operation not permitted"; !strings.Contains(r.stderr, want) {
					t.Errorf("%s: stderr %q, want %q", script, r.stderr, want)
				}
			}
		})
	}
	wantErrno(t, "rename scratch onto sealed image.vhd", syscall.Rename(scratch, m.dataFile("sealed")), syscall.EPERM)
	r := execCmd("mv", scratch, m.dataFile("sealed"))
	if r.code == 0 {
		t.Errorf("mv of a scratch file onto a sealed image.vhd exited 0")
	}
	wantErrno(t, "rename image.vhd away", syscall.Rename(m.dataFile("sealed"), m.images("sealed", "moved.vhd")), syscall.EPERM)
	// A new scratch file in a sealed image cannot even be created.
	fd, err := syscall.Open(m.images("sealed", "new.vhd"), syscall.O_WRONLY|syscall.O_CREAT, 0o644)
	if err == nil {
		syscall.Close(fd)
	}
	wantErrno(t, "create a scratch file in a sealed image", err, syscall.EPERM)

	if fi, err := os.Stat(m.backing(id)); err != nil || fi.Mode() != 0o400 {
		t.Errorf("STORE/data/%s.vhd: mode %v (%v), want -r--------", id, fi.Mode(), err)
	}
	cmp(t, fx.Path, m.backing(id))
	// Nothing changed.
	m.checkSealed(t, "sealed", fx)
	// Properties other than the system ones stay editable.
	run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", m.dataFile("sealed"))
	if got := m.prop("sealed", "os_distro"); got != "superos" {
		t.Errorf("os_distro after setfattr on a sealed image = %q", got)
	}
}

// TestSealedModes checks the modes layout.md gives: a sealed image.vhd is
// 0444, system-maintained property files are 0444 (status 0644: the
// owner deactivates a sealed image), the ones the owner edits 0644, for a
// private image (the default) and a public one; the
// backing file in STORE/data is 0400 (the daemon's user only).
func TestSealedModes(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	for _, vis := range []string{"private", "public"} {
		t.Run(vis, func(t *testing.T) {
			id := m.mkimage(vis)
			sh(t, `echo "$2" > "$1"`, m.propFile(vis, "visibility"), vis)
			run(t, "cp", fx.Path, m.dataFile(vis))
			sh(t, `echo x > "$1"`, m.propFile(vis, "custom_key"))
			want := map[string]os.FileMode{
				m.dataFile(vis):                0o444,
				m.byID(id, "image.vhd"):        0o444,
				m.backing(id):                  0o400,
				m.propFile(vis, "custom_key"):  0o644,
				m.byID(id, "properties", "id"): 0o444,
			}
			for _, k := range systemKeys {
				want[m.propFile(vis, k)] = 0o444
			}
			// The owner deactivates a sealed image by writing its status.
			want[m.propFile(vis, "status")] = 0o644
			for _, k := range ownerKeys {
				want[m.propFile(vis, k)] = 0o644
			}
			var wrong []string
			for p, mode := range want {
				fi, err := os.Stat(p)
				if err != nil {
					t.Errorf("stat: %v", err)
					continue
				}
				if fi.Mode() != mode {
					rel, _ := filepath.Rel(filepath.Dir(m.Mnt), p)
					wrong = append(wrong, fmt.Sprintf("%s is %v, want %v", rel, fi.Mode(), mode))
				}
			}
			if len(wrong) > 0 {
				slices.Sort(wrong)
				t.Errorf("modes differ from layout.md (sealed data and system properties 0444):\n%s", strings.Join(wrong, "\n"))
			}
		})
	}
}
