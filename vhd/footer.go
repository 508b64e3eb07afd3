package vhd

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// FooterSize is the size in bytes of the Hard Disk Footer (VHD spec §Hard
// Disk Footer Format). Virtual PC before 2004 wrote a 511-byte footer, which
// Inspect also accepts at the end of a file (see LegacyFooterSize).
const FooterSize = 512

// LegacyFooterSize is the size of the footer that Microsoft Virtual PC
// releases before 2004 wrote: the 512-byte footer less its last reserved
// byte (VHD spec §Hard Disk Footer Format).
const LegacyFooterSize = 511

// footerCookie is the Cookie of the Hard Disk Footer ("conectix").
const footerCookie = "conectix"

// Features bits (VHD spec §Hard Disk Footer Format, Features).
const (
	FeatureTemporary uint32 = 0x1 // the disk may be deleted on shutdown
	FeatureReserved  uint32 = 0x2 // must always be set
)

// FileFormatVersion is the only File Format Version the spec defines
// (major 1, minor 0) (VHD spec §Hard Disk Footer Format, File Format
// Version).
const FileFormatVersion uint32 = 0x00010000

// NoDataOffset is the Data Offset of a fixed disk's footer and of the
// dynamic disk header: all 64 bits set (VHD spec §Hard Disk Footer Format,
// Data Offset; §Dynamic Disk Header Format, Data Offset, where the spec's
// text says 0xFFFFFFFF but Microsoft's tools and qemu write and expect all
// 64 bits).
const NoDataOffset uint64 = 0xFFFFFFFFFFFFFFFF

// MaxSize is the largest Current Size imagefs accepts, in bytes: 2040 GiB
// (0xFF000000 sectors of 512 bytes). The 2006 spec sets no limit of its own
// (§Hard Disk Footer Format, Current Size); 2040 GiB is the VHD limit of
// Hyper-V and of qemu (VHD_MAX_SECTORS).
const MaxSize uint64 = 2040 << 30

// vhdEpoch is the origin of Time Stamp: 2000-01-01 00:00:00 UTC.
var vhdEpoch = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// DiskType is the footer's Disk Type field (VHD spec §Hard Disk Footer
// Format, Disk Type).
type DiskType uint32

// The disk types imagefs knows. 0 (none), 1 and 5 (reserved, deprecated)
// and every other value are refused as invalid.
const (
	DiskTypeFixed        DiskType = 2
	DiskTypeDynamic      DiskType = 3
	DiskTypeDifferencing DiskType = 4
)

// String returns "fixed", "dynamic", "differencing", or "unknown(N)".
func (t DiskType) String() string {
	switch t {
	case DiskTypeFixed:
		return "fixed"
	case DiskTypeDynamic:
		return "dynamic"
	case DiskTypeDifferencing:
		return "differencing"
	}
	return fmt.Sprintf("unknown(%d)", uint32(t))
}

// MarshalText encodes t as its String form ("fixed", "dynamic",
// "differencing", "unknown(N)"); it never fails.
func (t DiskType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Footer field offsets (VHD spec §Hard Disk Footer Format).
const (
	offFeatures       = 8
	offFormatVersion  = 12
	offDataOffset     = 16
	offTimeStamp      = 24
	offCreatorApp     = 28
	offCreatorVersion = 32
	offCreatorHostOS  = 36
	offOriginalSize   = 40
	offCurrentSize    = 48
	offDiskGeometry   = 56
	offDiskType       = 60
	offChecksum       = 64
	offUniqueID       = 68
	offSavedState     = 84
)

// footer is a decoded Hard Disk Footer.
type footer struct {
	raw            [FooterSize]byte // as read; a legacy footer's last byte is 0
	features       uint32
	formatVersion  uint32
	dataOffset     uint64
	timeStamp      uint32
	creatorApp     [4]byte
	creatorVersion uint32
	creatorHostOS  [4]byte
	originalSize   uint64
	currentSize    uint64
	geometry       Geometry
	diskType       DiskType
	checksum       uint32
	uniqueID       [16]byte
	savedState     byte
}

// hasCookie reports whether b starts with the footer Cookie "conectix".
func hasCookie(b []byte) bool {
	return len(b) >= len(footerCookie) && string(b[:len(footerCookie)]) == footerCookie
}

// parseFooter decodes the 512 bytes of a footer; b may be 511 bytes long
// (legacy footer), in which case the missing reserved byte reads as 0.
func parseFooter(b []byte) *footer {
	f := &footer{}
	copy(f.raw[:], b)
	r := f.raw[:]
	be := binary.BigEndian
	f.features = be.Uint32(r[offFeatures:])
	f.formatVersion = be.Uint32(r[offFormatVersion:])
	f.dataOffset = be.Uint64(r[offDataOffset:])
	f.timeStamp = be.Uint32(r[offTimeStamp:])
	copy(f.creatorApp[:], r[offCreatorApp:])
	f.creatorVersion = be.Uint32(r[offCreatorVersion:])
	copy(f.creatorHostOS[:], r[offCreatorHostOS:])
	f.originalSize = be.Uint64(r[offOriginalSize:])
	f.currentSize = be.Uint64(r[offCurrentSize:])
	f.geometry = Geometry{
		Cylinders:       be.Uint16(r[offDiskGeometry:]),
		Heads:           r[offDiskGeometry+2],
		SectorsPerTrack: r[offDiskGeometry+3],
	}
	f.diskType = DiskType(be.Uint32(r[offDiskType:]))
	f.checksum = be.Uint32(r[offChecksum:])
	copy(f.uniqueID[:], r[offUniqueID:])
	f.savedState = r[offSavedState]
	return f
}

// checksum is the VHD checksum of b: the one's complement of the sum of all
// bytes, the 4-byte checksum field at skip excluded (VHD spec §Hard Disk
// Footer Format, Checksum; §Dynamic Disk Header Format, Checksum).
func checksum(b []byte, skip int) uint32 {
	var sum uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// fill copies the footer's facts into i.
func (f *footer) fill(i *Info) {
	i.DiskType = f.diskType
	i.CurrentSize = f.currentSize
	i.OriginalSize = f.originalSize
	i.Geometry = f.geometry
	i.GeometrySize = f.geometry.Size()
	i.CreatorApplication = fourCC(f.creatorApp)
	i.CreatorApplicationRaw = f.creatorApp
	i.CreatorVersion = f.creatorVersion
	i.CreatorHostOS = fourCC(f.creatorHostOS)
	i.UniqueID = f.uniqueID
	i.Timestamp = vhdEpoch.Add(time.Duration(f.timeStamp) * time.Second)
	i.SavedState = f.savedState != 0
	i.Features = f.features
	i.DataOffset = f.dataOffset
}

// check validates the footer's own fields, adding findings to i. now is the
// reference time for the Time Stamp check.
func (f *footer) check(i *Info, now time.Time) {
	if want := checksum(f.raw[:], offChecksum); f.checksum != want {
		i.add("footer-checksum", "footer Checksum is 0x%08X, want 0x%08X", f.checksum, want)
	}
	if f.features&FeatureReserved == 0 {
		i.add("footer-features", "Features is 0x%08X, without the reserved bit 0x00000002 that must always be set", f.features)
	} else if unknown := f.features &^ (FeatureReserved | FeatureTemporary); unknown != 0 {
		i.add("footer-features", "Features is 0x%08X, with unknown bits 0x%08X", f.features, unknown)
	}
	if f.formatVersion != FileFormatVersion {
		i.add("footer-version", "File Format Version is 0x%08X, want 0x%08X", f.formatVersion, FileFormatVersion)
	}
	switch f.diskType {
	case DiskTypeFixed, DiskTypeDynamic:
	case DiskTypeDifferencing:
		i.add("differencing-disk", "Disk Type is 4 (differencing): the disk needs a parent disk on some host and is not self-contained")
	default:
		i.add("disk-type", "Disk Type is %d, want 2 (fixed) or 3 (dynamic)", uint32(f.diskType))
	}
	switch {
	case f.currentSize == 0:
		i.add("current-size-zero", "Current Size is 0 bytes")
	case f.currentSize%SectorSize != 0:
		i.add("current-size-unaligned", "Current Size %d bytes is not a multiple of %d", f.currentSize, SectorSize)
	case f.currentSize > MaxSize:
		i.add("current-size-too-large", "Current Size %d bytes is over the VHD limit of %d bytes (2040 GiB)", f.currentSize, MaxSize)
	}
	if f.diskType == DiskTypeFixed && f.dataOffset != NoDataOffset {
		i.add("fixed-data-offset", "fixed disk Data Offset is 0x%016X, want 0x%016X", f.dataOffset, NoDataOffset)
	}
	if f.uniqueID == ([16]byte{}) {
		i.add("zero-unique-id", "Unique Id is all zeros, so the disk cannot be told apart from others")
	}
	if f.currentSize != 0 && f.currentSize%(1<<20) != 0 {
		i.add("size-not-mib-aligned", "Current Size %d bytes is not a whole number of MiB (%d bytes over %d MiB); Azure refuses such disks",
			f.currentSize, f.currentSize%(1<<20), f.currentSize>>20)
	}
	if gs := f.geometry.Size(); gs != f.currentSize {
		i.add("geometry-mismatch", "%s", geometryMessage(f, gs))
	}
	if f.features&FeatureTemporary != 0 {
		i.add("temporary-disk", "Features has the temporary bit 0x00000001 set, marking the disk as a candidate for deletion on shutdown")
	}
	if f.savedState != 0 {
		i.add("saved-state", "Saved State is %d: the disk was captured while its virtual machine was in a saved state", f.savedState)
	}
	if ts := vhdEpoch.Add(time.Duration(f.timeStamp) * time.Second); ts.After(now.Add(ClockSkew)) {
		i.add("future-timestamp", "Time Stamp %s is later than now (%s)", ts.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
}

// ClockSkew is how far in the future a footer Time Stamp (VHD spec §Hard
// Disk Footer Format, Time Stamp) may be before Inspect warns
// ("future-timestamp"): the uploading host's clock may run ahead of ours.
const ClockSkew = 10 * time.Minute

// fourCC renders a 4-byte footer code as text: trailing NULs are dropped,
// spaces kept ("win ", "tap", "Wi2k"); see printable.
func fourCC(b [4]byte) string {
	return printable([]byte(strings.TrimRight(string(b[:]), "\x00")))
}

// printable renders bytes as text, writing bytes outside printable ASCII
// (and the backslash) as \xNN, so that a hostile file cannot put control
// characters in a message.
func printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '\\' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "\\x%02x", c)
		}
	}
	return sb.String()
}
