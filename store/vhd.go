package store

import (
	"bytes"
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
	// KeyVHDSizeMiBAligned is "true" when Current Size is a whole number of
	// MiB, "false" otherwise (Azure refuses such disks; qemu-img makes them
	// from sizes its CHS geometry rounds). A fact, not a warning.
	KeyVHDSizeMiBAligned = "vhd_size_mib_aligned"
)

// ruleSizeNotMiBAligned is the vhd rule recorded as KeyVHDSizeMiBAligned
// rather than as a warning.
const ruleSizeNotMiBAligned = "size-not-mib-aligned"

// inspectVHD validates staged data with the vhd package. It returns the
// facts to record, the virtual size (Current Size), and a refusal reason
// (see refusalReason) when the upload must not become active.
func inspectVHD(r io.ReaderAt, size int64) (facts map[string]string, virtualSize int64, refusal string, err error) {
	info, err := vhd.Inspect(r, size)
	if err != nil {
		return nil, 0, "", err
	}
	if f := info.Refusal(); f != nil {
		return nil, 0, refusalReason(r, size, f), nil
	}
	facts = map[string]string{
		KeyVHDDiskType:       info.DiskType.String(),
		KeyVHDCreator:        creator(info),
		KeyVHDUniqueID:       info.UniqueIDString(),
		KeyVHDSizeMiBAligned: fmt.Sprint(!info.Has(ruleSizeNotMiBAligned)),
	}
	var warns []string
	for _, w := range info.Warnings() {
		if w.Rule == ruleSizeNotMiBAligned {
			continue
		}
		warns = append(warns, w.Rule+": "+w.Message)
	}
	if len(warns) > 0 {
		facts[KeyVHDWarnings] = strings.Join(warns, "\n")
	}
	return facts, int64(info.CurrentSize), "", nil
}

// Kill reasons that do not come from the vhd package's rules. Each says
// what happened first; reasons from a rule end with "(severity rule:
// message)".
const (
	reasonEmpty = "upload empty: 0 bytes were written (an empty file, `: > image.vhd` or `truncate -s 0`); upload the VHD again"
)

// reasonNoSpace is the kill reason of an upload whose writes failed with
// ENOSPC.
func reasonNoSpace(size int64) string {
	return fmt.Sprintf("no space left on device during the upload (%d bytes staged when a write failed with ENOSPC); free space in the store and upload again", size)
}

// reasonWriterFailed is the kill reason of an upload whose writer exited
// with wait status status before closing it.
func reasonWriterFailed(size int64, status int) string {
	if sig := status & 0x7f; sig != 0 {
		return fmt.Sprintf("upload incomplete: the writer was killed (signal %d) after %d bytes; upload again", sig, size)
	}
	return fmt.Sprintf("upload incomplete: the writer exited with status %d after %d bytes, without closing the file; upload again", status>>8, size)
}

// foreignFormat names the disk format the first bytes of r show, or "".
func foreignFormat(r io.ReaderAt, size int64) string {
	var head [64]byte
	n, _ := r.ReadAt(head[:], 0)
	b := head[:n]
	switch {
	case bytes.HasPrefix(b, []byte("QFI\xfb")):
		return "a qcow2 image"
	case bytes.HasPrefix(b, []byte("KDMV")), bytes.HasPrefix(b, []byte("# Disk DescriptorFile")):
		return "a VMDK image"
	case bytes.HasPrefix(b, []byte("vhdxfile")):
		return "a VHDX image"
	}
	if size >= 0x8006 {
		var iso [5]byte
		if n, _ := r.ReadAt(iso[:], 0x8001); n == 5 && string(iso[:]) == "CD001" {
			return "an ISO 9660 image"
		}
	}
	return ""
}

// refusalReason says why an upload of size bytes that r holds is refused,
// given the vhd package's refusal f: what happened first (upload
// incomplete, not a VHD and what it is instead), then f itself in
// parentheses.
func refusalReason(r io.ReaderAt, size int64, f *vhd.Finding) string {
	rule := fmt.Sprintf("(%s %s: %s)", f.Severity, f.Rule, f.Message)
	switch f.Rule {
	case "not-vhd":
		if what := foreignFormat(r, size); what != "" {
			return fmt.Sprintf("not a VHD: this is %s; convert it with qemu-img convert -O vpc %s", what, rule)
		}
		return fmt.Sprintf("upload incomplete or not a VHD: no VHD footer at the end of the %d bytes: an interrupted copy? or raw data: convert it with qemu-img convert -f raw -O vpc, or keep it raw in an image whose disk_format is raw (set it before the upload: echo raw > properties/disk_format) %s", size, rule)
	case "footer-missing":
		return fmt.Sprintf("upload incomplete: no VHD footer at the end of the %d bytes, only its copy at offset 0: an interrupted copy? %s", size, rule)
	}
	return fmt.Sprintf("%s %s: %s", f.Severity, f.Rule, f.Message)
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
