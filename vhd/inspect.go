// Package vhd parses and validates VHD (Microsoft Virtual Hard Disk v1)
// image files before imagefs accepts them, following the Microsoft Virtual
// Hard Disk Image Format Specification v1.0 (October 2006), cited below as
// "VHD spec". Inspect reads only the structures that validation needs (the
// tail footer, the head footer copy, the dynamic header and the Block
// Allocation Table), never the data area, and bounds every allocation by the
// file size.
package vhd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Info is what Inspect learned about a VHD file: its facts, taken from the
// Hard Disk Footer (VHD spec §Hard Disk Footer Format) and, for dynamic
// and differencing disks, the Dynamic Disk Header (§Dynamic Disk Header
// Format), and its Findings. Facts are reported as found even when a
// finding says they are wrong; when the file is not a VHD at all every fact
// is zero.
type Info struct {
	// DiskType is the footer's Disk Type.
	DiskType DiskType
	// CurrentSize is the footer's Current Size in bytes: the virtual disk
	// size that Hyper-V, Azure and imagefs use (Glance's virtual_size).
	CurrentSize uint64
	// OriginalSize is the footer's Original Size in bytes: the size at
	// creation.
	OriginalSize uint64
	// Geometry is the footer's Disk Geometry (Appendix: CHS Calculation).
	Geometry Geometry
	// GeometrySize is C*H*S*512 bytes, the size that readers which size by
	// geometry (Virtual PC, qemu for some creators) use.
	GeometrySize uint64
	// CreatorApplication is the footer's 4-byte Creator Application as
	// text, trailing NULs dropped, for example "qemu", "qem2", "win ",
	// "tap"; non-printable bytes are written as \xNN.
	CreatorApplication string
	// CreatorApplicationRaw is the same field as stored.
	CreatorApplicationRaw [4]byte
	// CreatorVersion is the footer's Creator Version as stored: major
	// version in the high 16 bits, minor in the low 16.
	CreatorVersion uint32
	// CreatorHostOS is the footer's Creator Host OS as text, for example
	// "Wi2k" (0x5769326B) or "Mac " (0x4D616320); empty when zero.
	CreatorHostOS string
	// UniqueID is the footer's Unique Id as stored.
	UniqueID [16]byte
	// Timestamp is the footer's Time Stamp: seconds since 2000-01-01
	// 00:00:00 UTC, as a UTC time.
	Timestamp time.Time
	// SavedState is true when the footer's Saved State byte is non-zero.
	SavedState bool
	// Features is the footer's Features field (bit 0x1 temporary, bit 0x2
	// reserved and always set).
	Features uint32
	// DataOffset is the footer's Data Offset: the byte offset of the
	// Dynamic Disk Header, or 0xFFFFFFFFFFFFFFFF for a fixed disk.
	DataOffset uint64
	// LegacyFooter is true when the file ends in the 511-byte footer of
	// Virtual PC releases before 2004.
	LegacyFooter bool
	// Dynamic holds the dynamic header and table facts; nil for a fixed
	// disk, and when the header could not be found or has the wrong Cookie.
	Dynamic *DynamicInfo
	// Findings lists every problem found, in the order checked. See Rules
	// for the rule ids.
	Findings []Finding
}

// CreatorVersionString returns CreatorVersion as "major.minor", for
// example "5.3" for 0x00050003 (VHD spec §Hard Disk Footer Format, Creator
// Version).
func (i *Info) CreatorVersionString() string {
	return fmt.Sprintf("%d.%d", i.CreatorVersion>>16, i.CreatorVersion&0xFFFF)
}

// UniqueIDString returns UniqueID as a UUID in the 8-4-4-4-12 hex form, its
// bytes in stored order (as vhdiinfo prints it), for example
// "787bb12d-a507-4d8e-8f08-2ad2e2148e32" (VHD spec §Hard Disk Footer Format,
// Unique Id).
func (i *Info) UniqueIDString() string { return FormatUUID(i.UniqueID) }

// FormatUUID formats a 16-byte Unique Id or Parent Unique ID (VHD spec §Hard
// Disk Footer Format, Unique Id; §Dynamic Disk Header Format, Parent Unique
// ID) as a UUID in the 8-4-4-4-12 lower-case hex form, bytes in stored
// order.
func FormatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// Inspect reads and validates the VHD file of size bytes that r holds,
// checking it against the VHD spec (§Hard Disk Footer Format, §Dynamic Disk
// Header Format, §Block Allocation Table and Data Blocks, Appendix: CHS
// Calculation) and imagefs's upload rules (see Rules). It is InspectAt with
// the current time.
//
// The error is non-nil only for an I/O error from r (including r holding
// fewer than size bytes); every problem with the bytes is a Finding. When
// the file is not a VHD at all, Info has a single Invalid finding with rule
// "not-vhd" and zero facts. Inspect reads at most the last 512 bytes, the
// first 512 bytes, the 1024-byte dynamic header and the Block Allocation
// Table (in 64 KiB chunks), and never allocates more than a small constant
// plus a fraction of size.
func Inspect(r io.ReaderAt, size int64) (*Info, error) {
	return InspectAt(r, size, time.Now())
}

// InspectAt is Inspect with now as the reference time for the
// "future-timestamp" warning (a footer Time Stamp more than ClockSkew after
// now).
func InspectAt(r io.ReaderAt, size int64, now time.Time) (*Info, error) {
	if size < LegacyFooterSize {
		return notVHD("the %d-byte file is too small to hold a %d-byte VHD footer", size, FooterSize), nil
	}
	usize := uint64(size)
	var buf [FooterSize]byte
	var footerLen uint64
	if usize%SectorSize == LegacyFooterSize {
		if err := readAt(r, buf[:LegacyFooterSize], usize-LegacyFooterSize); err != nil {
			return nil, err
		}
		if hasCookie(buf[:]) {
			footerLen = LegacyFooterSize
		}
	}
	if footerLen == 0 && usize >= FooterSize {
		buf = [FooterSize]byte{}
		if err := readAt(r, buf[:], usize-FooterSize); err != nil {
			return nil, err
		}
		if hasCookie(buf[:]) {
			footerLen = FooterSize
		}
	}
	if footerLen == 0 {
		return inspectHeadOnly(r, usize, now)
	}

	f := parseFooter(buf[:footerLen])
	info := &Info{LegacyFooter: footerLen == LegacyFooterSize}
	f.fill(info)
	f.check(info, now)
	l := layout{size: usize, footerOff: usize - footerLen, footerLen: footerLen}
	switch f.diskType {
	case DiskTypeFixed:
		if l.footerOff != f.currentSize {
			info.add("fixed-size-mismatch", "fixed disk file is %d bytes, want Current Size %d + %d", usize, f.currentSize, footerLen)
		}
	case DiskTypeDynamic, DiskTypeDifferencing:
		if usize%SectorSize != 0 && footerLen == FooterSize {
			info.add("file-size-unaligned", "dynamic disk file is %d bytes, not a multiple of %d (%d bytes over)", usize, SectorSize, usize%SectorSize)
		}
		if err := checkDynamic(r, l, f, info); err != nil {
			return nil, err
		}
	}
	return info, nil
}

// inspectHeadOnly handles a file without a tail footer: if offset 0 holds
// a footer copy, it is a dynamic disk whose tail was lost or buried under
// padding, reported from the copy; otherwise the file is not a VHD.
func inspectHeadOnly(r io.ReaderAt, usize uint64, now time.Time) (*Info, error) {
	if usize >= FooterSize {
		var head [FooterSize]byte
		if err := readAt(r, head[:], 0); err != nil {
			return nil, err
		}
		if hasCookie(head[:]) {
			f := parseFooter(head[:])
			info := &Info{}
			f.fill(info)
			info.add("footer-missing", "the footer copy at offset 0 is there but the last %d bytes of the %d-byte file hold no footer: the upload is truncated or padded",
				FooterSize, usize)
			f.check(info, now)
			return info, nil
		}
	}
	return notVHD("no \"%s\" footer cookie in the last %d bytes nor at offset 0: the %d-byte file is not a VHD", footerCookie, FooterSize, usize), nil
}

func notVHD(format string, args ...any) *Info {
	i := &Info{}
	i.add("not-vhd", format, args...)
	return i
}

// readAt fills b from r at off; a short read is an error.
func readAt(r io.ReaderAt, b []byte, off uint64) error {
	if off > math.MaxInt64 {
		return fmt.Errorf("vhd: offset %d out of range", off)
	}
	n, err := r.ReadAt(b, int64(off))
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("vhd: reading %d bytes at offset %d: %w", len(b), off, err)
}
