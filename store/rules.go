package store

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on names, keys and values (Glance's defaults where it has one).
const (
	MaxNameBytes  = 255   // image name length in bytes
	MaxValueBytes = 65535 // custom property value length in bytes
	// DefaultPropertyQuota is Glance's image_property_quota default.
	DefaultPropertyQuota = 128

	// MaxKeyBytes is the longest custom property key: its extended
	// attribute "user."+key must fit the kernel's 255-byte limit on
	// attribute names (XATTR_NAME_MAX).
	MaxKeyBytes = MaxNameBytes - len("user.")
)

// ValidName checks an image name: 1-255 bytes, no '/', no NUL, no
// control character (bytes 0x01-0x1f and 0x7f: newline, tab, escape), not
// "." or "..". Errors wrap ErrInvalid.
func ValidName(name string) error {
	switch {
	case name == "" || len(name) > MaxNameBytes:
		return fmt.Errorf("%w: name must be 1-%d bytes, got %d", ErrInvalid, MaxNameBytes, len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains '/' or NUL", ErrInvalid, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: name %q is reserved", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: name %q contains the control character %q (byte %d): names may not contain control characters", ErrInvalid, name, b, i)
		}
	}
	return nil
}

// ValidKey checks a custom property key: 1-250 bytes (MaxKeyBytes) of
// printable characters without '/'. Errors wrap ErrInvalid.
func ValidKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: key must be 1-%d bytes (user.KEY must fit the 255-byte limit on extended attribute names), got %d", ErrInvalid, MaxKeyBytes, len(key))
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalid, key)
	}
	for _, r := range key {
		if r == '/' || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: key %q contains %q (printable characters other than '/' only)", ErrInvalid, key, r)
		}
	}
	return nil
}

// ValidValue reports whether value obeys the rule of key (its type and
// size), without regard to who sets it. Errors wrap ErrInvalid or
// ErrTooBig and name the key and the rule.
func ValidValue(key, value string) error {
	bad := func(rule string) error {
		return fmt.Errorf("%w: %s=%q: %s", ErrInvalid, key, value, rule)
	}
	switch key {
	case KeyMinRAM, KeyMinDisk:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 {
			return bad("must be an integer >= 0")
		}
	case KeyProtected, KeyOSHidden:
		if value != "true" && value != "false" {
			return bad("must be true or false")
		}
	case KeyVisibility:
		switch Visibility(value) {
		case VisibilityPrivate, VisibilityShared, VisibilityCommunity, VisibilityPublic:
		default:
			return bad("must be private, shared, community or public")
		}
	case KeyName:
		return ValidName(value)
	case KeyMembers:
		return checkMembers(value)
	case KeyDiskFormat, KeyContainerFormat:
		return validFormat(key, value)
	case KeyTags:
		return validTags(value)
	default:
		if len(value) > MaxValueBytes {
			return fmt.Errorf("%w: %s: value is %d bytes, limit %d", ErrTooBig, key, len(value), MaxValueBytes)
		}
	}
	return nil
}

// applyValue sets a validated core or custom value on a cloned record.
func applyValue(im *Image, key, value string) {
	switch key {
	case KeyName:
		im.Name = value
	case KeyMinRAM:
		im.MinRAM, _ = strconv.ParseInt(value, 10, 64)
	case KeyMinDisk:
		im.MinDisk, _ = strconv.ParseInt(value, 10, 64)
	case KeyProtected:
		im.Protected = value == "true"
	case KeyVisibility:
		im.Visibility = Visibility(value)
	case KeyDiskFormat:
		im.DiskFormat = value
	case KeyContainerFormat:
		im.ContainerFormat = value
	case KeyTags:
		applyTags(im, value)
	case KeyOSHidden:
		applyHidden(im, value)
	case KeyStatus:
		im.Status = Status(value)
		if im.Status == StatusActive {
			deleteExtra(im, KeyDeactivateReason) // the owner or root reactivated it
		}
	default:
		setExtra(im, key, value)
	}
}

// setExtra sets an extra (custom or system) value, giving a new key its
// inode slot.
func setExtra(im *Image, key, value string) {
	if im.Extra == nil {
		im.Extra = map[string]string{}
	}
	if im.Slots == nil {
		im.Slots = map[string]uint32{}
	}
	if _, ok := im.Slots[key]; !ok {
		if im.NextSlot < slotExtraBase {
			im.NextSlot = slotExtraBase
		}
		im.Slots[key] = im.NextSlot
		im.NextSlot++
	}
	im.Extra[key] = value
}

func deleteExtra(im *Image, key string) {
	delete(im.Extra, key)
	delete(im.Slots, key)
}
