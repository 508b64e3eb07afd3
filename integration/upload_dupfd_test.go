package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRedirectDupFD: a writer that closes a copy of its descriptor while
// it still writes through another does not end its upload there. dash
// (Debian's /bin/sh) opens the file of `exec 5>FILE` and, around each
// command redirected to >&5, saves and restores its stdout with dup2,
// dropping its own duplicate of FILE after the command; Python closes a
// dup. Each writes the VHD in two halves (the first has no footer: a seal
// there kills the image), and the image ends active with the whole VHD.
// When the writer's last descriptor closes, the status is final before
// close(2) returns (the script reads it right after).
func TestRedirectDupFD(t *testing.T) {
	m := mount(t)
	requireTools(t, "dash", "bash", "python3", "cat")
	fx := makeVHD(t, 16*mib, "fixed")
	dir := t.TempDir()
	b, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := filepath.Join(dir, "p1"), filepath.Join(dir, "p2")
	if err := os.WriteFile(p1, b[:4*mib], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p2, b[4*mib:], 0o644); err != nil {
		t.Fatal(err)
	}
	// $1 image.vhd, $2 first half, $3 second half, $4 properties/status.
	cases := []struct{ name, prog, script string }{
		{"dash-exec", "dash", `exec 5>"$1"; cat "$2" >&5; cat "$3" >&5; exec 5>&-; cat "$4"`},
		{"dash-exec-noclose", "dash", `exec 5>"$1"; cat "$2" >&5; cat "$3" >&5`},
		{"dash-group-fd5", "dash", `{ cat "$2" >&5; cat "$3" >&5; } 5>"$1"; cat "$4"`},
		{"dash-group", "dash", `{ cat "$2"; cat "$3"; } >"$1"; cat "$4"`},
		{"dash-group-nested", "dash", `{ cat "$2"; { cat "$3"; } 2>/dev/null; } >"$1"; cat "$4"`},
		{"bash-exec", "bash", `exec 5>"$1"; cat "$2" >&5; cat "$3" >&5; exec 5>&-; cat "$4"`},
		{"bash-group", "bash", `{ cat "$2"; cat "$3"; } >"$1"; cat "$4"`},
		{"python-dup", "python3", `import os, sys
p, a, b, st = sys.argv[1:5]
fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
os.write(fd, open(a, "rb").read())
os.close(os.dup(fd))
os.write(fd, open(b, "rb").read())
os.close(fd)
print(open(st).read(), end="")
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "dup-" + c.name
			m.mkimage(name)
			var r result
			if c.prog == "python3" {
				r = execCmd("python3", "-c", c.script, m.dataFile(name), p1, p2, m.propFile(name, "status"))
			} else {
				r = execCmd(c.prog, "-c", c.script, "sh", m.dataFile(name), p1, p2, m.propFile(name, "status"))
			}
			if r.code != 0 {
				t.Fatalf("%s: %s (status %s, kill reason %q)", c.prog, r,
					readOptional(m.propFile(name, "status")), readOptional(m.propFile(name, "imagefs_kill_reason")))
			}
			if strings.HasSuffix(c.name, "noclose") {
				if r.stdout != "" {
					t.Errorf("stdout %q", r.stdout)
				}
			} else if r.stdout != "active\n" {
				t.Errorf("status read right after the writer's last close: %q, want active", r.stdout)
			}
			m.checkSealed(t, name, fx)
		})
	}
}
