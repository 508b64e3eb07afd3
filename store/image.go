package store

import (
	"maps"
	"slices"
	"strconv"
	"time"
)

// Status is an image status, as in Glance's Images API v2.
type Status string

// The statuses an image moves through (see ../shared/docs/concepts.md).
const (
	StatusQueued      Status = "queued"      // record exists, no data yet
	StatusSaving      Status = "saving"      // data is being uploaded
	StatusActive      Status = "active"      // data sealed and verified
	StatusKilled      Status = "killed"      // upload failed; may be uploaded again
	StatusDeactivated Status = "deactivated" // an admin blocked data reads
	// StatusUploading: data is being staged, or staged and awaiting its
	// import (Glance's glance-direct import; import.go).
	StatusUploading Status = "uploading"
	// StatusImporting: staged data is being sealed by an import.
	StatusImporting Status = "importing"
)

// Sealed reports whether the image data is sealed (never written again).
func (s Status) Sealed() bool { return s == StatusActive || s == StatusDeactivated }

// Core and system property keys.
const (
	KeyID              = "id"
	KeyName            = "name"
	KeyStatus          = "status"
	KeyChecksum        = "checksum"
	KeyOSHashAlgo      = "os_hash_algo"
	KeyOSHashValue     = "os_hash_value"
	KeySize            = "size"
	KeyVirtualSize     = "virtual_size"
	KeyOwner           = "owner"
	KeyVisibility      = "visibility"
	KeyProtected       = "protected"
	KeyMinRAM          = "min_ram"
	KeyMinDisk         = "min_disk"
	KeyDiskFormat      = "disk_format"
	KeyContainerFormat = "container_format"
	KeyCreatedAt       = "created_at"
	KeyUpdatedAt       = "updated_at"
	// KeyKillReason holds why an upload was refused (status killed).
	KeyKillReason = "imagefs_kill_reason"
)

// coreKeys lists the core properties in display order. Their inode slots
// are their index here plus slotCoreBase, so they never change.
var coreKeys = []string{
	KeyID, KeyName, KeyStatus, KeyChecksum, KeyOSHashAlgo, KeyOSHashValue,
	KeySize, KeyVirtualSize, KeyOwner, KeyVisibility, KeyProtected,
	KeyMinRAM, KeyMinDisk, KeyDiskFormat, KeyContainerFormat,
	KeyCreatedAt, KeyUpdatedAt,
	KeyOSHidden, // tags.go
}

// systemKeys are maintained by imagefs; nobody may set or remove them.
var systemKeys = map[string]bool{
	KeyID: true, KeyStatus: true, KeyChecksum: true, KeyOSHashAlgo: true,
	KeyOSHashValue: true, KeySize: true, KeyVirtualSize: true, KeyOwner: true,
	KeyCreatedAt: true, KeyUpdatedAt: true,
}

// systemPrefixes mark system-maintained extra properties (VHD facts, the
// kill reason) and Glance's reserved namespace.
var systemPrefixes = []string{"os_glance", "imagefs_", "vhd_"}

// IsSystemKey reports whether key is system-maintained: nobody, root
// included, may set or remove it.
func IsSystemKey(key string) bool {
	if systemKeys[key] {
		return true
	}
	for _, p := range systemPrefixes {
		if len(key) >= len(p) && key[:len(p)] == p {
			return true
		}
	}
	return false
}

// IsCoreKey reports whether key is a core property (never removable).
func IsCoreKey(key string) bool { return slices.Contains(coreKeys, key) }

// Image is one image record. Values handed out by the Store are snapshots:
// never modified after publication, so readers need no lock. A change makes
// a modified copy (clone) and publishes it.
type Image struct {
	ID      string `json:"id"`
	InoBase uint64 `json:"ino"` // inode numbers of this image are InoBase|slot
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Owner   uint32 `json:"owner"`
	// OwnerProject is the Keystone project that owns the image when no
	// uid maps it (owner.go): Owner and GID are 0 then, and the owner
	// property shows the project. "" for an image a uid owns.
	OwnerProject string `json:"owner_project,omitempty"`
	// GID is the group of the process that created the image, shown as
	// the group of its files; records written before it was kept have 0.
	GID uint32 `json:"gid,omitempty"`

	Visibility Visibility `json:"visibility"`
	Protected  bool       `json:"protected"`
	MinRAM     int64      `json:"min_ram"`
	MinDisk    int64      `json:"min_disk"`

	// DiskFormat is Glance's disk_format: DiskFormatVHD or DiskFormatRaw,
	// "" while unset (an image created through the Images API without
	// one: Glance's null). ContainerFormat is ContainerFormatBare or ""
	// (unset). Both are settable only while the image holds no data
	// (formats.go). Records written before they were kept decode as vhd
	// and bare (newRecord).
	DiskFormat      string `json:"disk_format"`
	ContainerFormat string `json:"container_format"`

	Checksum    string `json:"checksum,omitempty"`
	OSHashAlgo  string `json:"os_hash_algo,omitempty"`
	OSHashValue string `json:"os_hash_value,omitempty"`
	Size        int64  `json:"size"`         // bytes; -1 until sealed
	VirtualSize int64  `json:"virtual_size"` // bytes; -1 until sealed

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// Extra holds system-maintained extras (VHD facts, kill reason) and
	// custom properties.
	Extra map[string]string `json:"extra,omitempty"`
	// Slots maps each extra key to its inode slot; slots are never reused.
	Slots    map[string]uint32 `json:"slots,omitempty"`
	NextSlot uint32            `json:"next_slot"`

	// rev is the ModRev of the record's img/<id> key as the catalog
	// reported it (at load, or the revision of the commit that wrote
	// it): the condition of the next change of the record. Not in the
	// record.
	rev int64
}

// newRecord returns an Image to decode a catalog record (JSON) into: a
// record written before imagefs kept disk_format and container_format
// (no such fields) is a VHD image in a bare container, as imagefs stored
// only those. (Not an UnmarshalJSON method: that parses every record
// twice, and loads decode many.)
func newRecord() *Image {
	return &Image{DiskFormat: DiskFormatVHD, ContainerFormat: ContainerFormatBare}
}

func (im *Image) clone() *Image {
	c := *im
	c.Extra = maps.Clone(im.Extra)
	c.Slots = maps.Clone(im.Slots)
	return &c
}

func timeString(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Property returns the value of key and whether the image has it. Unset
// system values (checksum of a queued image, say) are absent, as Glance
// shows them null.
func (im *Image) Property(key string) (string, bool) {
	switch key {
	case KeyID:
		return im.ID, true
	case KeyName:
		return im.Name, true
	case KeyStatus:
		return string(im.Status), true
	case KeyChecksum:
		return im.Checksum, im.Checksum != ""
	case KeyOSHashAlgo:
		return im.OSHashAlgo, im.OSHashAlgo != ""
	case KeyOSHashValue:
		return im.OSHashValue, im.OSHashValue != ""
	case KeySize:
		return strconv.FormatInt(im.Size, 10), im.Size >= 0
	case KeyVirtualSize:
		return strconv.FormatInt(im.VirtualSize, 10), im.VirtualSize >= 0
	case KeyOwner:
		return OwnerOf(im).String(), true
	case KeyVisibility:
		return string(im.Visibility), true
	case KeyProtected:
		return strconv.FormatBool(im.Protected), true
	case KeyMinRAM:
		return strconv.FormatInt(im.MinRAM, 10), true
	case KeyMinDisk:
		return strconv.FormatInt(im.MinDisk, 10), true
	case KeyDiskFormat:
		return im.DiskFormat, im.DiskFormat != ""
	case KeyContainerFormat:
		return im.ContainerFormat, im.ContainerFormat != ""
	case KeyCreatedAt:
		return timeString(im.CreatedAt), true
	case KeyUpdatedAt:
		return timeString(im.UpdatedAt), true
	case KeyOSHidden:
		return strconv.FormatBool(im.Hidden()), true
	}
	v, ok := im.Extra[key]
	return v, ok
}

// customCount counts the properties the owner added (not core, not
// system-maintained, not the tags): what the property quota limits, as Glance's
// image_property_quota does.
func (im *Image) customCount() int {
	n := 0
	for k := range im.Extra {
		if !IsSystemKey(k) && !IsCoreKey(k) && k != KeyTags {
			n++
		}
	}
	return n
}

// Keys lists the keys the image has: core keys in a fixed order, then
// extras sorted.
func (im *Image) Keys() []string {
	keys := make([]string, 0, len(coreKeys)+len(im.Extra))
	for _, k := range coreKeys {
		if _, ok := im.Property(k); ok {
			keys = append(keys, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(im.Extra)) {
		if !IsCoreKey(k) { // os_hidden is kept in Extra (tags.go)
			keys = append(keys, k)
		}
	}
	return keys
}

// Inode slots within an image's inode range (InoBase | slot).
//
// Some slots number nodes that exist only in the presentation (the image
// directory, properties/, by-id/<id>/, the view symlink), yet they stay in
// store: an inode number is a store fact. It must be stable across
// mounts and unique across the store, so it is derived from InoBase,
// which the catalog hands out and persists (putSeqIno) and fsck checks;
// the slots of properties are persisted in the record (Slots, NextSlot);
// and the ranges of all these nodes must not collide with each other or
// with the scratch slots the store hands out. Keeping the whole layout in
// one table here is what guarantees that; fs only picks a slot.
const (
	SlotDir          = 1 // images/<name>
	SlotData         = 2 // image.vhd (same inode under images/ and by-id/)
	SlotPropsDir     = 3 // images/<name>/properties
	SlotByIDDir      = 4 // by-id/<id>
	SlotByIDPropsDir = 5 // by-id/<id>/properties
	SlotViewLink     = 6 // the symlink by-property/<key>/<value>/<name> (one inode in every view)
	SlotTagLink      = 7 // the symlink by-tag/<tag>/<name> (one inode in every tag's view)
	slotCoreBase     = 16
	slotExtraBase    = 64
	// SlotScratchBase starts the in-memory slots of scratch files.
	SlotScratchBase = 1 << 19
	inoShift        = 20
)

// Ino returns the inode number of slot within this image.
func (im *Image) Ino(slot uint32) uint64 { return im.InoBase | uint64(slot) }

// PropertyIno returns the stable inode number of the property file key.
func (im *Image) PropertyIno(key string) uint64 {
	if i := slices.Index(coreKeys, key); i >= 0 {
		return im.Ino(uint32(slotCoreBase + i))
	}
	return im.Ino(im.Slots[key])
}
