package store

import (
	"bytes"
	"fmt"
	"io"
)

// Disk and container formats (Glance's disk_format and container_format).
//
// imagefs stores two disk formats: VHD (checked at seal by package vhd,
// as always) and raw (any bytes are a raw disk: no structure to check, its
// virtual size is its size). The container is always bare: the data is
// the disk itself, which the mount serves as the file a hypervisor boots;
// Glance's other container formats (ami, ari, aki, ovf, ova, docker,
// compressed) name wrappers imagefs neither checks nor unwraps.
//
// An image made on the mount (mkdir) is vhd and bare; one created through
// the Images API has the formats its caller gave, or none (Glance's null).
// Both are set while the image holds no data (queued, or killed: a
// refused upload left nothing) and no upload of it is in progress; data
// is accepted only once both are set, and is checked as the disk_format
// says at its seal. The data file of an image is named by its format:
// image.vhd or image.raw (DataName).
const (
	DiskFormatVHD       = "vhd"
	DiskFormatRaw       = "raw"
	ContainerFormatBare = "bare"

	// RawDataName is the data file of a raw image (ImageDataName, image.vhd,
	// is a VHD image's).
	RawDataName = "image.raw"
)

// DiskFormats and ContainerFormats list the formats imagefs stores, in
// the order its messages and the API's schema give them.
var (
	DiskFormats      = []string{DiskFormatVHD, DiskFormatRaw}
	ContainerFormats = []string{ContainerFormatBare}
)

// DataName returns the name of im's data file in its directories:
// image.vhd for a VHD image, image.raw for a raw one, "" while its
// disk_format is unset (the directory then shows no data file).
func (im *Image) DataName() string {
	return DataFileName(im.DiskFormat)
}

// DataFileName returns the data file name of disk format f ("" for none).
func DataFileName(f string) string {
	switch f {
	case DiskFormatVHD:
		return ImageDataName
	case DiskFormatRaw:
		return RawDataName
	}
	return ""
}

// IsDataName reports whether name is the data file name of some disk
// format (image.vhd, image.raw): reserved in every image directory.
func IsDataName(name string) bool {
	return name == ImageDataName || name == RawDataName
}

// validFormat checks a disk_format or container_format value: one imagefs
// stores, or "" (unset, Glance's null). Errors wrap ErrInvalid and say
// what imagefs stores instead.
func validFormat(key, value string) error {
	switch key {
	case KeyDiskFormat:
		if value == "" || value == DiskFormatVHD || value == DiskFormatRaw {
			return nil
		}
		return fmt.Errorf("%w: disk_format=%q: imagefs stores vhd or raw disks (convert others with qemu-img convert -O vpc or -O raw)", ErrInvalid, value)
	case KeyContainerFormat:
		if value == "" || value == ContainerFormatBare {
			return nil
		}
		return fmt.Errorf("%w: container_format=%q: imagefs stores bare disks only (the data is the disk itself, in no container)", ErrInvalid, value)
	}
	return nil
}

// checkFormatChange reports whether key (disk_format or container_format)
// of im may be set to value now: only while the image holds no data
// (queued, or killed: its refused upload was dropped) and this host has
// no upload of it in progress (Glance: "Attribute disk_format can be only
// replaced for a queued image."). The seal checks the data as the
// record's disk_format says, so it never changes under an upload. Errors:
// ErrImmutable. Must hold s.mu.
func (s *Store) checkFormatChange(im *Image, key string) error {
	switch im.Status {
	case StatusQueued, StatusKilled:
	default:
		return fmt.Errorf("%w: image %s is %s: its %s is fixed once data is uploaded (Glance: Attribute %s can be only replaced for a queued image.)", ErrImmutable, im.ID, im.Status, key, key)
	}
	if l := s.live[im.ID]; l != nil && l.upload != nil {
		return fmt.Errorf("%w: image %s: an upload of its data is in progress; its %s is fixed until it ends (Glance: Attribute %s can be only replaced for a queued image.)", ErrImmutable, im.ID, key, key)
	}
	return nil
}

// FormatsMissing returns Glance's message when im's disk_format or
// container_format is unset ("Properties disk_format, container_format
// must be set prior to saving data."), or "" when both are set: data is
// accepted only then.
func FormatsMissing(im *Image) string {
	var missing []string
	if im.DiskFormat == "" {
		missing = append(missing, KeyDiskFormat)
	}
	if im.ContainerFormat == "" {
		missing = append(missing, KeyContainerFormat)
	}
	switch len(missing) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("Property %s must be set prior to saving data.", missing[0])
	}
	return fmt.Sprintf("Properties %s, %s must be set prior to saving data.", missing[0], missing[1])
}

// uploadable checks that c may upload data to im (writable) and that its
// formats are set. Errors: as writable, ErrInvalid (a format unset).
// Must hold s.mu.
func uploadable(c Caller, im *Image) error {
	if err := writable(c, im); err != nil {
		return err
	}
	if stagedStatus(im.Status) {
		return fmt.Errorf("%w: image %s is %s: its data is staged for import (import it, or remove image.vhd to drop the staged data)", ErrBusy, im.ID, im.Status)
	}
	if msg := FormatsMissing(im); msg != "" {
		return fmt.Errorf("%w: image %s: %s (on the mount: echo vhd or raw > properties/disk_format)", ErrInvalid, im.ID, msg)
	}
	return nil
}

// wrongDataName checks a data file name (image.vhd, image.raw) given in
// im's directory: the other format's name is refused (ErrInvalid), so a
// VHD copied as image.vhd into a raw image (or the reverse) is not taken
// for the image's data.
func wrongDataName(im *Image, name string) error {
	if !IsDataName(name) || name == im.DataName() {
		return nil
	}
	if im.DiskFormat == "" {
		return fmt.Errorf("%w: image %s has no disk_format yet: set it first (echo vhd or raw > properties/disk_format)", ErrInvalid, im.ID)
	}
	return fmt.Errorf("%w: image %s is a %s image: its data file is %s, not %s (its disk_format can change only while it holds no data)", ErrInvalid, im.ID, im.DiskFormat, im.DataName(), name)
}

// inspectRaw decides whether size bytes that r holds may be sealed as a
// raw disk: any bytes may, but those another format's header starts
// (qcow2, VMDK, VHDX, a dynamic or differencing VHD), which a hypervisor
// that probes formats would not boot as raw (and a qcow2 one may name a
// backing file on the host). refusal says why; the virtual size of a raw
// disk is its size.
func inspectRaw(r io.ReaderAt, size int64) (vsize int64, refusal string) {
	var head [8]byte
	if n, _ := r.ReadAt(head[:], 0); n == len(head) && bytes.Equal(head[:], []byte("conectix")) {
		return 0, "not a raw disk: this is a dynamic or differencing VHD (a copy of its footer is at offset 0); upload it to a vhd image (disk_format vhd), or convert it with qemu-img convert -f vpc -O raw"
	}
	if what := foreignFormat(r, size); what != "" && what != "an ISO 9660 image" { // a CD image is a raw image of a disc
		return 0, fmt.Sprintf("not a raw disk: this is %s; convert it with qemu-img convert -O raw", what)
	}
	return size, ""
}

// Fixed reports whether property key of im can be set by nobody, root
// included: a system key (but the status of a sealed image, which its
// owner or root writes to deactivate or reactivate it), or disk_format
// and container_format once the image holds data (or receives it:
// saving). Its file shows mode 0444.
func (im *Image) Fixed(key string) bool {
	if key == KeyStatus {
		// The owner (or root) deactivates and reactivates a sealed image
		// by writing it (checkStatusChange).
		return !im.Status.Sealed()
	}
	if IsSystemKey(key) {
		return true
	}
	if key == KeyDiskFormat || key == KeyContainerFormat {
		return im.Status != StatusQueued && im.Status != StatusKilled
	}
	return false
}
