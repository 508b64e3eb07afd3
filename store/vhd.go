package store

import (
	"fmt"
	"io"
	"strings"

	"github.com/imagefs/imagefs/vhd"
)

// VHD facts recorded as system properties at seal.
const (
	KeyVHDDiskType = "vhd_disk_type" // fixed or dynamic
	KeyVHDCreator  = "vhd_creator"   // creator application, version and host OS
	KeyVHDUniqueID = "vhd_unique_id" // the footer's Unique Id as a UUID
	KeyVHDWarnings = "vhd_warnings"  // one "rule: message" per line, if any
)

// inspectVHD validates staged data with the vhd package. It returns the
// facts to record, the virtual size (Current Size), and a refusal reason
// ("rule: message") when the upload must not become active.
func inspectVHD(r io.ReaderAt, size int64) (facts map[string]string, virtualSize int64, refusal string, err error) {
	info, err := vhd.Inspect(r, size)
	if err != nil {
		return nil, 0, "", err
	}
	if f := info.Refusal(); f != nil {
		return nil, 0, fmt.Sprintf("%s %s: %s", f.Severity, f.Rule, f.Message), nil
	}
	facts = map[string]string{
		KeyVHDDiskType: info.DiskType.String(),
		KeyVHDCreator:  creator(info),
		KeyVHDUniqueID: info.UniqueIDString(),
	}
	var warns []string
	for _, w := range info.Warnings() {
		warns = append(warns, w.Rule+": "+w.Message)
	}
	if len(warns) > 0 {
		facts[KeyVHDWarnings] = strings.Join(warns, "\n")
	}
	return facts, int64(info.CurrentSize), "", nil
}

// creator formats the footer's Creator Application, Creator Version and
// Creator Host OS, e.g. "qemu 5.3 (Wi2k)" or "tap 1.3".
func creator(info *vhd.Info) string {
	c := strings.TrimSpace(info.CreatorApplication) + " " + info.CreatorVersionString()
	if os := strings.TrimSpace(info.CreatorHostOS); os != "" {
		c += " (" + os + ")"
	}
	return c
}
