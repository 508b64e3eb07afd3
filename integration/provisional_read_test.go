package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pollerScript opens argv[1] and argv[2] for reading over and over until
// the file argv[3] exists (then once more), and prints the md5 of
// everything each successful open read: "<label> <md5>".
const pollerScript = `import hashlib, os, sys, time
paths, stop = sys.argv[1:3], sys.argv[3]
def attempt():
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        h = hashlib.md5()
        try:
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
        finally:
            os.close(fd)
        print(p.split("/")[-3], h.hexdigest(), flush=True)
deadline = time.time() + 120
while not os.path.exists(stop) and time.time() < deadline:
    attempt()
    time.sleep(0.001)
attempt()
`

// TestQemuImgConvertWithPoller: while qemu-img convert writes into the
// mount (headers, close: a provisional seal; open again, data), a process
// polling by-id/<id>/image.vhd and images/<name>/image.vhd never reads
// anything but the final disk: the provisional seal is its writer's only
// (by-id does not list it, images/ refuses the open). qemu-img exits 0,
// the image ends active with the source's disk, and the poller reads it
// from both paths once qemu-img has exited.
func TestQemuImgConvertWithPoller(t *testing.T) {
	m := mount(t)
	requireTools(t, "qemu-img", "python3", "strace")
	raw := rawDisk(t, 16*mib, 77)
	for _, sub := range []string{"fixed", "dynamic"} {
		t.Run(sub, func(t *testing.T) {
			name := "pg-" + sub
			m.mkimage(name)
			id := m.prop(name, "id")
			stop := filepath.Join(t.TempDir(), "stop")
			poller := exec.Command("python3", "-c", pollerScript, m.byID(id, "image.vhd"), m.dataFile(name), stop)
			var out strings.Builder
			poller.Stdout, poller.Stderr = &out, &out
			if err := poller.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the poller is polling
			args := []string{"convert", "-f", "raw", "-O", "vpc"}
			if sub == "fixed" {
				args = append(args, "-o", "subformat=fixed")
			}
			// Each open of image.vhd by qemu-img waits 300 ms (strace's
			// syscall delay), as with a slower source (the tester's qcow2
			// convert reopened 0.4 s after its first close): the poller
			// surely tries while the first seal is provisional.
			args = append(args, raw, m.dataFile(name))
			args = append([]string{"-f", "-qq", "-o", "/dev/null", "-P", m.dataFile(name), "-e", "trace=openat", "-e", "inject=openat:delay_enter=300000", "qemu-img"}, args...)
			r := execCmd("strace", args...)
			os.WriteFile(stop, nil, 0o644)
			perr := poller.Wait()
			if r.code != 0 {
				t.Errorf("qemu-img convert with a poller: %s (status %s, deactivate reason %q)", r,
					readOptional(m.propFile(name, "status")), readOptional(m.propFile(name, "imagefs_deactivate_reason")))
			}
			final := md5sum(t, m.byID(id, "image.vhd"))
			if perr != nil {
				t.Fatalf("poller: %v\n%s", perr, out.String())
			}
			reads := map[string]int{}
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				f := strings.Fields(line)
				if len(f) != 2 {
					t.Fatalf("poller output %q", out.String())
				}
				reads[f[0]]++
				if f[1] != final {
					t.Errorf("the poller read %s/.../image.vhd with md5 %s, not the final data %s", f[0], f[1], final)
				}
			}
			if got := m.prop(name, "status"); got != "active" {
				t.Fatalf("status %q, want active", got)
			}
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "vpc", raw, m.byID(id, "image.vhd"))
			if got := m.prop(name, "checksum"); got != final {
				t.Errorf("checksum %s, md5sum of the data %s", got, final)
			}
			if reads["by-id"] == 0 || reads["images"] == 0 {
				t.Errorf("the poller read by-id %d times, images %d times after qemu-img exited, want both", reads["by-id"], reads["images"])
			}
		})
	}
}
