package vhd

import (
	"fmt"
)

// SectorSize is the VHD sector size in bytes: geometry, Block Allocation
// Table entries and sector bitmaps count 512-byte sectors (VHD spec §Block
// Allocation Table and Data Blocks; Appendix: CHS Calculation).
const SectorSize = 512

// Geometry is the footer's Disk Geometry field: cylinders, heads and
// sectors per track of the emulated ATA disk (VHD spec §Hard Disk Footer
// Format, Disk Geometry; Appendix: CHS Calculation).
type Geometry struct {
	Cylinders       uint16
	Heads           uint8
	SectorsPerTrack uint8
}

// MaxGeometry is the largest geometry the spec's CHS algorithm yields,
// 65535/16/255, addressing 136899993600 bytes (about 127 GiB) (VHD spec
// Appendix: CHS Calculation); larger disks carry it, qemu writes it for
// force_size disks, and qemu reads any disk that carries it by Current Size.
// Do not modify it.
var MaxGeometry = Geometry{Cylinders: 65535, Heads: 16, SectorsPerTrack: 255}

// Size returns the bytes the geometry addresses: C*H*S*512 (VHD spec
// Appendix: CHS Calculation). It cannot overflow: the largest is
// 65535*255*255*512 bytes.
func (g Geometry) Size() uint64 {
	return uint64(g.Cylinders) * uint64(g.Heads) * uint64(g.SectorsPerTrack) * SectorSize
}

// String returns the geometry as "C/H/S", for example "963/5/17" (VHD spec
// §Hard Disk Footer Format, Disk Geometry).
func (g Geometry) String() string {
	return fmt.Sprintf("%d/%d/%d", g.Cylinders, g.Heads, g.SectorsPerTrack)
}

// GeometryForSize returns the geometry the spec's algorithm gives a disk of
// size bytes (VHD spec Appendix: CHS Calculation). The sector count is
// size/512 rounded down and capped at 65535*16*255; the geometry may address
// less than size (it rounds down).
func GeometryForSize(size uint64) Geometry {
	total := size / SectorSize
	if limit := MaxGeometry.Size() / SectorSize; total > limit {
		total = limit
	}
	var spt, heads, cth uint64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		heads = (cth + 1023) / 1024
		if heads < 4 {
			heads = 4
		}
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = total / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = total / spt
		}
	}
	return Geometry{Cylinders: uint16(cth / heads), Heads: uint8(heads), SectorsPerTrack: uint8(spt)}
}

// QemuUsesGeometry reports whether qemu's vpc driver (block/vpc.c,
// vpc_open) takes the virtual size of this disk from Disk Geometry instead
// of Current Size, when no force_size_calc option overrides it. A disk
// whose geometry is MaxGeometry is always read by Current Size. Otherwise
// qemu 10.0 and later size by geometry only disks whose Creator Application
// is "vpc " (Virtual PC) or "qemu" (qemu without force_size); qemu before
// 10.0 (legacy true) sizes by geometry every creator except "win "
// (Hyper-V), "qem2" (qemu with force_size), "d2v " (Disk2vhd), "CTXS"
// (XenConverter) and "tap\0" (XenServer). (VHD spec §Hard Disk Footer
// Format, Creator Application and Disk Geometry.)
func (i *Info) QemuUsesGeometry(legacy bool) bool {
	return qemuUsesGeometry(i.CreatorApplicationRaw, i.Geometry, legacy)
}

// QemuVirtualSize returns the virtual size in bytes that qemu reports for
// this disk (qemu-img info "virtual-size"): GeometrySize or CurrentSize, per
// QemuUsesGeometry (VHD spec §Hard Disk Footer Format, Current Size and Disk
// Geometry).
func (i *Info) QemuVirtualSize(legacy bool) uint64 {
	if i.QemuUsesGeometry(legacy) {
		return i.GeometrySize
	}
	return i.CurrentSize
}

func qemuUsesGeometry(app [4]byte, g Geometry, legacy bool) bool {
	if g == MaxGeometry {
		return false
	}
	switch string(app[:]) {
	case "vpc ", "qemu":
		return true
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
		return false
	}
	return legacy
}

// geometryMessage explains a geometry-mismatch finding: which size qemu
// and other readers take.
func geometryMessage(f *footer, gs uint64) string {
	head := fmt.Sprintf("Disk Geometry %s addresses %d bytes but Current Size is %d", f.geometry, gs, f.currentSize)
	app := fourCC(f.creatorApp)
	switch {
	case f.geometry == MaxGeometry:
		return fmt.Sprintf("%s; qemu reads a disk with the maximum geometry by Current Size, but Virtual PC and other tools that size by geometry see %d bytes", head, gs)
	case qemuUsesGeometry(f.creatorApp, f.geometry, false):
		return fmt.Sprintf("%s; qemu sizes disks from Creator Application \"%s\" by geometry (like Virtual PC), so it sees %d bytes while Hyper-V and Azure see %d", head, app, gs, f.currentSize)
	case !qemuUsesGeometry(f.creatorApp, f.geometry, true):
		return fmt.Sprintf("%s; qemu reads disks from Creator Application \"%s\" by Current Size, but Virtual PC and other tools that size by geometry see %d bytes", head, app, gs)
	}
	return fmt.Sprintf("%s; qemu before 10.0 sizes disks from Creator Application \"%s\" by geometry (%d bytes), qemu 10.0 and later and Hyper-V by Current Size", head, app, gs)
}
