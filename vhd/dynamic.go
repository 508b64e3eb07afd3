package vhd

import (
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
)

// DynamicHeaderSize is the size in bytes of the Dynamic Disk Header (VHD
// spec §Dynamic Disk Header Format).
const DynamicHeaderSize = 1024

// HeaderVersion is the only Header Version the spec defines (VHD spec
// §Dynamic Disk Header Format, Header Version).
const HeaderVersion uint32 = 0x00010000

// UnusedBlock is the Block Allocation Table entry of a block that is not
// allocated (VHD spec §Block Allocation Table and Data Blocks).
const UnusedBlock uint32 = 0xFFFFFFFF

// dynamicCookie is the Cookie of the Dynamic Disk Header.
const dynamicCookie = "cxsparse"

// Dynamic Disk Header field offsets (VHD spec §Dynamic Disk Header Format).
const (
	hdrDataOffset      = 8
	hdrTableOffset     = 16
	hdrVersion         = 24
	hdrMaxTableEntries = 28
	hdrBlockSize       = 32
	hdrChecksum        = 36
	hdrParentUniqueID  = 40
	hdrParentTimeStamp = 56
	hdrParentName      = 64
	hdrParentNameSize  = 512
	hdrLocators        = 576
	locatorSize        = 24
	locatorCount       = 8
)

// batChunk is how many bytes of the Block Allocation Table Inspect reads at
// a time; the table is streamed, never held whole.
const batChunk = 64 << 10

// DynamicInfo holds the facts of a dynamic or differencing disk's Dynamic
// Disk Header and Block Allocation Table (VHD spec §Dynamic Disk Header
// Format; §Block Allocation Table and Data Blocks).
type DynamicInfo struct {
	// HeaderOffset is the byte offset of the Dynamic Disk Header: the
	// footer's Data Offset.
	HeaderOffset uint64
	// TableOffset is the byte offset of the Block Allocation Table.
	TableOffset uint64
	// MaxTableEntries is the number of 4-byte table entries.
	MaxTableEntries uint32
	// BlockSize is the number of data bytes in a block (2 MiB by default);
	// each allocated block is preceded by a sector bitmap of BitmapSize
	// bytes.
	BlockSize uint32
	// BitmapSize is the size in bytes of a block's sector bitmap: one bit a
	// sector, rounded up to a whole sector. Zero when BlockSize is invalid.
	BitmapSize uint32
	// AllocatedBlocks is the number of table entries other than 0xFFFFFFFF.
	AllocatedBlocks uint32
	// ParentUniqueID and ParentName are the header's Parent Unique ID and
	// Parent Unicode Name (decoded from UTF-16 big-endian, control
	// characters replaced by U+FFFD); set only for a differencing disk.
	// imagefs never opens the parent.
	ParentUniqueID [16]byte
	ParentName     string
}

// layout is where the file's structures lie.
type layout struct {
	size      uint64 // file size in bytes
	footerOff uint64 // offset of the tail footer
	footerLen uint64 // 512, or 511 for a legacy footer
}

// span is a half-open byte range [start, end) of the file.
type span struct{ start, end uint64 }

func (a span) overlaps(b span) bool {
	return a.start < a.end && b.start < b.end && a.start < b.end && b.start < a.end
}

// checkDynamic validates a dynamic or differencing disk's head footer copy,
// Dynamic Disk Header, parent locators, Block Allocation Table and blocks.
// It returns only I/O errors from r.
func checkDynamic(r io.ReaderAt, l layout, f *footer, info *Info) error {
	if err := checkHeadCopy(r, l, f, info); err != nil {
		return err
	}
	hdrOff := f.dataOffset
	if hdrOff < FooterSize || l.footerOff < FooterSize+DynamicHeaderSize || hdrOff > l.footerOff-DynamicHeaderSize {
		info.add("header-offset", "dynamic header at Data Offset %d (%d bytes) does not lie between the head footer copy (bytes 0-511) and the tail footer at byte %d",
			hdrOff, DynamicHeaderSize, l.footerOff)
		return nil
	}
	var h [DynamicHeaderSize]byte
	if err := readAt(r, h[:], hdrOff); err != nil {
		return err
	}
	if string(h[:8]) != dynamicCookie {
		info.add("header-cookie", "dynamic header at byte %d has Cookie \"%s\", want \"%s\"", hdrOff, printable(h[:8]), dynamicCookie)
		return nil
	}
	be := binary.BigEndian
	d := &DynamicInfo{
		HeaderOffset:    hdrOff,
		TableOffset:     be.Uint64(h[hdrTableOffset:]),
		MaxTableEntries: be.Uint32(h[hdrMaxTableEntries:]),
		BlockSize:       be.Uint32(h[hdrBlockSize:]),
	}
	info.Dynamic = d
	if got, want := be.Uint32(h[hdrChecksum:]), checksum(h[:], hdrChecksum); got != want {
		info.add("header-checksum", "dynamic header Checksum is 0x%08X, want 0x%08X", got, want)
	}
	if v := be.Uint32(h[hdrVersion:]); v != HeaderVersion {
		info.add("header-version", "dynamic header Header Version is 0x%08X, want 0x%08X", v, HeaderVersion)
	}
	if v := be.Uint64(h[hdrDataOffset:]); v != NoDataOffset {
		info.add("header-data-offset", "dynamic header Data Offset is 0x%016X, want 0x%016X", v, NoDataOffset)
	}
	if f.diskType == DiskTypeDifferencing {
		copy(d.ParentUniqueID[:], h[hdrParentUniqueID:])
		d.ParentName = parentName(h[hdrParentName : hdrParentName+hdrParentNameSize])
	}
	checkLocators(h[hdrLocators:hdrLocators+locatorCount*locatorSize], l, info)

	bs := d.BlockSize
	bsOK := bs >= SectorSize && bs&(bs-1) == 0
	if !bsOK {
		info.add("block-size", "Block Size is %d bytes, want a power of two of at least %d", bs, SectorSize)
	} else {
		d.BitmapSize = uint32(roundUp(uint64(bs)/SectorSize/8+boolInt(bs/SectorSize%8 != 0), SectorSize))
		needed := f.currentSize / uint64(bs)
		if f.currentSize%uint64(bs) != 0 {
			needed++
		}
		switch covers := uint64(d.MaxTableEntries) * uint64(bs); {
		case uint64(d.MaxTableEntries) < needed:
			info.add("table-too-small", "Max Table Entries %d of %d-byte blocks covers %d bytes, less than Current Size %d (needs %d entries)",
				d.MaxTableEntries, bs, covers, f.currentSize, needed)
		case uint64(d.MaxTableEntries) > needed:
			info.add("table-oversized", "Max Table Entries %d of %d-byte blocks covers %d bytes, more than Current Size %d needs (%d entries)",
				d.MaxTableEntries, bs, covers, f.currentSize, needed)
		}
	}

	tableBytes := roundUp(uint64(d.MaxTableEntries)*4, SectorSize)
	if tableBytes > l.size {
		info.add("table-too-large", "Max Table Entries %d needs a %d-byte Block Allocation Table, larger than the %d-byte file",
			d.MaxTableEntries, tableBytes, l.size)
		return nil
	}
	table := span{d.TableOffset, d.TableOffset + tableBytes} // cannot wrap: checked next
	if d.TableOffset > l.footerOff || tableBytes > l.footerOff-d.TableOffset {
		info.add("table-out-of-bounds", "Block Allocation Table at Table Offset %d (%d bytes) does not end before the tail footer at byte %d",
			d.TableOffset, tableBytes, l.footerOff)
		return nil
	}
	head, hdr := span{0, FooterSize}, span{hdrOff, hdrOff + DynamicHeaderSize}
	if table.overlaps(head) || table.overlaps(hdr) {
		info.add("table-overlap", "Block Allocation Table at bytes %d-%d overlaps the head footer copy (0-511) or the dynamic header (%d-%d)",
			table.start, table.end-1, hdr.start, hdr.end-1)
		return nil
	}
	if !bsOK {
		return countAllocated(r, d, info)
	}
	return checkBlocks(r, l, d, []span{head, hdr, table}, info)
}

// checkHeadCopy compares the footer copy at offset 0 with the tail footer.
func checkHeadCopy(r io.ReaderAt, l layout, f *footer, info *Info) error {
	if l.footerOff < FooterSize {
		info.add("footer-copy-mismatch", "the %d-byte file has no room for a footer copy at offset 0 before the tail footer", l.size)
		return nil
	}
	var head [FooterSize]byte
	if err := readAt(r, head[:], 0); err != nil {
		return err
	}
	n := int(l.footerLen)
	if !hasCookie(head[:]) {
		info.add("footer-copy-mismatch", "offset 0 holds no footer copy (Cookie \"%s\", want \"%s\")", printable(head[:8]), footerCookie)
		return nil
	}
	for k := 0; k < n; k++ {
		if head[k] != f.raw[k] {
			info.add("footer-copy-mismatch", "footer copy at offset 0 differs from the tail footer at byte %d (%s)", k, footerField(k))
			return nil
		}
	}
	return nil
}

// checkLocators checks each Parent Locator Entry's Platform Data Offset and
// Platform Data Length against the file (VHD spec §Dynamic Disk Header
// Format, Parent Locator Entries).
func checkLocators(b []byte, l layout, info *Info) {
	be := binary.BigEndian
	bad, first := 0, -1
	var firstOff, firstLen uint64
	for k := 0; k < locatorCount; k++ {
		e := b[k*locatorSize : (k+1)*locatorSize]
		code, length, off := be.Uint32(e[0:]), uint64(be.Uint32(e[8:])), be.Uint64(e[16:])
		if code == 0 && length == 0 {
			continue
		}
		if off > l.footerOff || length > l.footerOff-off {
			bad++
			if first < 0 {
				first, firstOff, firstLen = k, off, length
			}
		}
	}
	if bad > 0 {
		info.add("parent-locator-out-of-bounds", "%d parent locator entries point outside the file; entry %d has Platform Data Offset %d and Length %d, past the tail footer at byte %d",
			bad, first, firstOff, firstLen, l.footerOff)
	}
}

// blockRef is an allocated block: its table index and its first sector.
type blockRef struct{ index, sector uint32 }

// checkBlocks streams the Block Allocation Table and checks that every
// allocated block (sector bitmap and data) lies before the tail footer,
// clear of the metadata spans and of every other block (VHD spec §Block
// Allocation Table and Data Blocks). Memory is bounded by the file size:
// at most one reference is kept per block that fits in the file.
func checkBlocks(r io.ReaderAt, l layout, d *DynamicInfo, meta []span, info *Info) error {
	blockSpan := uint64(d.BitmapSize) + uint64(d.BlockSize)
	fit := (l.footerOff - FooterSize) / blockSpan // blocks that fit without overlap
	limit := min(uint64(d.MaxTableEntries), fit+1)
	refs := make([]blockRef, 0, limit)
	overflow := false
	var oob, clash int
	var oobRef, clashRef blockRef
	err := scanTable(r, d, func(index, sector uint32) {
		b := span{uint64(sector) * SectorSize, uint64(sector)*SectorSize + blockSpan}
		switch {
		case b.end > l.footerOff:
			if oob == 0 {
				oobRef = blockRef{index, sector}
			}
			oob++
		case overlapsAny(b, meta):
			if clash == 0 {
				clashRef = blockRef{index, sector}
			}
			clash++
		case uint64(len(refs)) < limit:
			refs = append(refs, blockRef{index, sector})
		default:
			overflow = true
		}
	})
	if err != nil {
		return err
	}
	if oob > 0 {
		s := uint64(oobRef.sector) * SectorSize
		info.add("block-out-of-bounds", "%d allocated blocks do not end before the tail footer at byte %d; table entry %d puts its block at bytes %d-%d",
			oob, l.footerOff, oobRef.index, s, s+blockSpan-1)
	}
	if clash > 0 {
		s := uint64(clashRef.sector) * SectorSize
		info.add("block-overlaps-metadata", "%d allocated blocks overlap the head footer copy, dynamic header or table; table entry %d puts its block at bytes %d-%d",
			clash, clashRef.index, s, s+blockSpan-1)
	}
	if overflow {
		info.add("block-overlap", "more than %d allocated blocks of %d bytes lie between byte %d and the tail footer at byte %d, which holds at most %d without overlap",
			limit, blockSpan, FooterSize, l.footerOff, fit)
		return nil
	}
	slices.SortFunc(refs, func(a, b blockRef) int {
		switch {
		case a.sector < b.sector:
			return -1
		case a.sector > b.sector:
			return 1
		}
		return 0
	})
	n, first := 0, 0
	for k := 1; k < len(refs); k++ {
		if uint64(refs[k-1].sector)*SectorSize+blockSpan > uint64(refs[k].sector)*SectorSize {
			if n == 0 {
				first = k
			}
			n++
		}
	}
	if n > 0 {
		a, b := refs[first-1], refs[first]
		info.add("block-overlap", "%d pairs of allocated blocks overlap; table entries %d and %d put %d-byte blocks at bytes %d and %d",
			n, a.index, b.index, blockSpan, uint64(a.sector)*SectorSize, uint64(b.sector)*SectorSize)
	}
	return nil
}

// countAllocated streams the table only to count allocated entries (when
// Block Size is invalid and block extents are unknown).
func countAllocated(r io.ReaderAt, d *DynamicInfo, info *Info) error {
	return scanTable(r, d, func(uint32, uint32) {})
}

// scanTable reads the Block Allocation Table in chunks of at most batChunk
// bytes, counts allocated entries into d.AllocatedBlocks and calls fn for
// each. The caller has checked that the table lies inside the file.
func scanTable(r io.ReaderAt, d *DynamicInfo, fn func(index, sector uint32)) error {
	total := uint64(d.MaxTableEntries) * 4
	buf := make([]byte, min(total, batChunk))
	var index uint32
	for done := uint64(0); done < total; {
		chunk := buf[:min(total-done, uint64(len(buf)))]
		if err := readAt(r, chunk, d.TableOffset+done); err != nil {
			return err
		}
		for k := 0; k+4 <= len(chunk); k += 4 {
			if e := binary.BigEndian.Uint32(chunk[k:]); e != UnusedBlock {
				d.AllocatedBlocks++
				fn(index, e)
			}
			index++
		}
		done += uint64(len(chunk))
	}
	return nil
}

func overlapsAny(b span, spans []span) bool {
	for _, s := range spans {
		if b.overlaps(s) {
			return true
		}
	}
	return false
}

// roundUp rounds n up to a multiple of m (a power of two); n is small
// enough here (at most 2^34) not to wrap.
func roundUp(n, m uint64) uint64 { return (n + m - 1) &^ (m - 1) }

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// parentName decodes the Parent Unicode Name (UTF-16 big-endian, NUL
// terminated), replacing control characters by U+FFFD.
func parentName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for k := 0; k+1 < len(b); k += 2 {
		c := binary.BigEndian.Uint16(b[k:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return unicode.ReplacementChar
		}
		return r
	}, string(utf16.Decode(u)))
}

// footerField names the footer field that holds byte k.
func footerField(k int) string {
	fields := []struct {
		end  int
		name string
	}{
		{offFeatures, "Cookie"}, {offFormatVersion, "Features"}, {offDataOffset, "File Format Version"},
		{offTimeStamp, "Data Offset"}, {offCreatorApp, "Time Stamp"}, {offCreatorVersion, "Creator Application"},
		{offCreatorHostOS, "Creator Version"}, {offOriginalSize, "Creator Host OS"}, {offCurrentSize, "Original Size"},
		{offDiskGeometry, "Current Size"}, {offDiskType, "Disk Geometry"}, {offChecksum, "Disk Type"},
		{offUniqueID, "Checksum"}, {offSavedState, "Unique Id"}, {offSavedState + 1, "Saved State"},
	}
	for _, f := range fields {
		if k < f.end {
			return f.name
		}
	}
	return "Reserved"
}
