package imagesapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/imagefs/imagefs/store"
)

// glanceFormats are the formats Glance accepts by default
// (image_format.disk_formats and container_formats): imagefs names them
// in its refusal of one it does not store.
var glanceFormats = map[string][]string{
	"disk_format":      {"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"},
	"container_format": {"ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"},
}

// formatValue checks a disk_format or container_format of a create or a
// patch against the schema's enum (null or a format imagefs stores:
// store.DiskFormats, store.ContainerFormats) and returns the store's
// value ("" for null). Anything else is 400 in Glance's words for a value
// outside an enum ("Provided object does not match schema 'image': 'wrong'
// is not one of [None, 'vhd', 'raw']"), followed, for a format Glance
// knows, by what imagefs stores instead.
func formatValue(key string, v any) (string, int, string) {
	formats := store.DiskFormats
	if key == "container_format" {
		formats = store.ContainerFormats
	}
	if v == nil {
		return "", 0, ""
	}
	if s, ok := v.(string); ok && slices.Contains(formats, s) {
		return s, 0, ""
	}
	enum := []string{"None"}
	for _, f := range formats {
		enum = append(enum, "'"+f+"'")
	}
	msg := fmt.Sprintf("Provided object does not match schema 'image': %s is not one of [%s]", jsonRepr(v), strings.Join(enum, ", "))
	if s, ok := v.(string); ok && slices.Contains(glanceFormats[key], s) {
		if key == "disk_format" {
			msg += " (imagefs stores vhd and raw disks: convert others with qemu-img convert -O vpc or -O raw)"
		} else {
			msg += " (imagefs stores bare disks only: the data is the disk itself)"
		}
	}
	return "", http.StatusBadRequest, msg
}

// formatKeyOf returns the first disk_format or container_format among
// keys, or "".
func formatKeyOf(keys []string) string {
	for _, k := range keys {
		if k == store.KeyDiskFormat || k == store.KeyContainerFormat {
			return k
		}
	}
	return ""
}
