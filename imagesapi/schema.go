package imagesapi

import "github.com/imagefs/imagefs/store"

// imageSchema is GET /v2/schemas/image: the JSON schema of an image as
// Glance publishes it (its base properties; custom properties are
// strings), narrowed to what imagefs stores (disk_format vhd or raw,
// container_format bare: store.DiskFormats, store.ContainerFormats).
func imageSchema() map[string]any {
	str := func(desc string, extra ...any) map[string]any {
		m := map[string]any{"type": "string", "description": desc}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	nullStr := func(desc string, extra ...any) map[string]any {
		m := str(desc, extra...)
		m["type"] = []any{"null", "string"}
		m["readOnly"] = true
		return m
	}
	return map[string]any{
		"name":                 "image",
		"additionalProperties": map[string]any{"type": "string"},
		"links": []map[string]string{
			{"rel": "self", "href": "{self}"},
			{"rel": "enclosure", "href": "{file}"},
			{"rel": "describedby", "href": "{schema}"},
		},
		"properties": map[string]any{
			"id":               str("An identifier for the image", "pattern", "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"),
			"name":             map[string]any{"type": []any{"null", "string"}, "description": "Descriptive name for the image", "maxLength": 255},
			"status":           str("Status of the image", "readOnly", true, "enum", []string{"queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"}),
			"visibility":       str("Scope of image accessibility", "enum", []string{"community", "public", "private", "shared"}),
			"protected":        map[string]any{"type": "boolean", "description": "If true, image will not be deletable."},
			"os_hidden":        map[string]any{"type": "boolean", "description": "If true, image will not appear in default image list response."},
			"checksum":         nullStr("md5 hash of image contents.", "maxLength", 32),
			"os_hash_algo":     nullStr("Algorithm to calculate the os_hash_value", "maxLength", 64),
			"os_hash_value":    nullStr("Hexdigest of the image contents using the algorithm specified by the os_hash_algo", "maxLength", 128),
			"owner":            map[string]any{"type": []any{"null", "string"}, "description": "Owner of the image", "maxLength": 255},
			"size":             map[string]any{"type": []any{"null", "integer"}, "readOnly": true, "description": "Size of image file in bytes"},
			"virtual_size":     map[string]any{"type": []any{"null", "integer"}, "readOnly": true, "description": "Virtual size of image in bytes"},
			"container_format": map[string]any{"type": []any{"null", "string"}, "description": "Format of the container", "enum": formatEnum(store.ContainerFormats)},
			"disk_format":      map[string]any{"type": []any{"null", "string"}, "description": "Format of the disk", "enum": formatEnum(store.DiskFormats)},
			"created_at":       str("Date and time of image registration", "readOnly", true),
			"updated_at":       str("Date and time of the last image modification", "readOnly", true),
			"tags":             map[string]any{"type": "array", "description": "List of strings related to the image", "items": map[string]any{"type": "string", "maxLength": 255}},
			"direct_url":       str("URL to access the image file kept in external store", "readOnly", true),
			"min_ram":          map[string]any{"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
			"min_disk":         map[string]any{"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
			"self":             str("An image self url", "readOnly", true),
			"file":             str("An image file url", "readOnly", true),
			"schema":           str("An image schema url", "readOnly", true),
			"locations":        map[string]any{"type": "array", "description": "A set of URLs to access the image file kept in external store", "items": map[string]any{"type": "object"}},
		},
	}
}

// formatEnum is the schema's enum of a format: null, then the formats
// imagefs stores, as Glance lists [None] + its configured formats.
func formatEnum(formats []string) []any {
	e := []any{nil}
	for _, f := range formats {
		e = append(e, f)
	}
	return e
}

// imagesSchema is GET /v2/schemas/images: a list of images, with the
// paging links.
func imagesSchema() map[string]any {
	return map[string]any{
		"name": "images",
		"properties": map[string]any{
			"images": map[string]any{"type": "array", "items": imageSchema()},
			"schema": map[string]any{"type": "string"},
			"first":  map[string]any{"type": "string"},
			"next":   map[string]any{"type": "string"},
		},
		"links": []map[string]string{
			{"rel": "first", "href": "{first}"},
			{"rel": "next", "href": "{next}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	}
}
