package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagefs/imagefs/store/kv"
)

// Tags and os_hidden, as Glance's Images API v2 has them: both live in
// the image record's Extra, so the record's format (catalog, snapshot,
// migrate) is unchanged.
//
//   - tags: a set of strings, Extra["tags"] holding them sorted, one per
//     line, without duplicates; absent when the set is empty. Each tag is
//     1-255 characters (Glance's schema: maxLength 255) of valid UTF-8
//     without control characters (a newline would split it); at most
//     DefaultTagQuota per image (Glance's image_tag_quota), ErrQuota
//     past it. A value written as a whole (the tags file, user.tags) is a
//     list of lines: empty lines are skipped, duplicates and order do not
//     matter. The property quota does not count tags. The index holds
//     one entry per tag (key "tags", value the tag): by-tag/ and the API's
//     tag filter; by-property/ does not show the key.
//   - os_hidden: a core property, "true" or "false" (default false; the
//     owner or root sets it). Extra["os_hidden"] is "true" while hidden,
//     absent otherwise. The API leaves hidden images out of its default
//     listing; the mount lists them (docs/layout.md says why).
const (
	KeyTags     = "tags"
	KeyOSHidden = "os_hidden"
	// DefaultTagQuota is Glance's image_tag_quota default: tags per image.
	DefaultTagQuota = 128
	// MaxTagChars is the longest tag in characters (Glance's schema).
	MaxTagChars = 255
)

// ValidTag checks one tag: 1-255 characters (MaxTagChars) of valid UTF-8,
// no control character (bytes 0x00-0x1f, 0x7f). Errors wrap ErrInvalid.
func ValidTag(tag string) error {
	switch n := utf8.RuneCountInString(tag); {
	case tag == "":
		return fmt.Errorf("%w: tags: a tag may not be empty", ErrInvalid)
	case n > MaxTagChars:
		return fmt.Errorf("%w: tags: tag %.40q... is %d characters, limit %d", ErrInvalid, tag, n, MaxTagChars)
	case !utf8.ValidString(tag):
		return fmt.Errorf("%w: tags: tag %q is not valid UTF-8", ErrInvalid, tag)
	}
	for i := 0; i < len(tag); i++ {
		if b := tag[i]; b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: tags: tag %q contains the control character %q (a tags value is one tag per line)", ErrInvalid, tag, b)
		}
	}
	return nil
}

// ParseTags returns the set a tags value holds: its non-empty lines,
// sorted, each once. It does not check them (ValidTag).
func ParseTags(value string) []string {
	if value == "" {
		return nil
	}
	tags := strings.Split(value, "\n")
	tags = slices.DeleteFunc(tags, func(t string) bool { return t == "" })
	slices.Sort(tags)
	return slices.Compact(tags)
}

// FormatTags is the tags value of a set: sorted, one per line, each once
// ("" for none). It does not check them (ValidTag).
func FormatTags(tags []string) string {
	return strings.Join(ParseTags(strings.Join(tags, "\n")), "\n")
}

// validTags checks a tags value: every tag (ValidTag).
func validTags(value string) error {
	for _, t := range ParseTags(value) {
		if err := ValidTag(t); err != nil {
			return err
		}
	}
	return nil
}

// Tags returns the image's tags, sorted (an empty, non-nil slice for
// none).
func (im *Image) Tags() []string {
	t := ParseTags(im.Extra[KeyTags])
	if t == nil {
		return []string{}
	}
	return t
}

// HasTag reports whether the image has tag.
func (im *Image) HasTag(tag string) bool {
	_, found := slices.BinarySearch(ParseTags(im.Extra[KeyTags]), tag)
	return found && tag != ""
}

// Hidden reports whether the image is hidden (os_hidden true).
func (im *Image) Hidden() bool { return im.Extra[KeyOSHidden] == "true" }

// tagQuota is the store's limit of tags per image.
func (s *Store) tagQuota() int {
	if s.opts.TagQuota > 0 {
		return s.opts.TagQuota
	}
	return DefaultTagQuota
}

// checkTagQuota refuses a tags value of more tags than the quota, with
// Glance's message. Errors wrap ErrQuota.
func (s *Store) checkTagQuota(value string) error {
	if n := len(ParseTags(value)); n > s.tagQuota() {
		return fmt.Errorf("%w: The limit has been exceeded on the number of allowed image tags. Attempted: %d, Maximum: %d", ErrQuota, n, s.tagQuota())
	}
	return nil
}

// applyTags sets the tags value on a cloned record, normalized (sorted,
// each once); none removes the key.
func applyTags(im *Image, value string) {
	if v := FormatTags([]string{value}); v != "" {
		setExtra(im, KeyTags, v)
	} else {
		deleteExtra(im, KeyTags)
	}
}

// applyHidden sets os_hidden on a cloned record ("true" or "false").
func applyHidden(im *Image, value string) {
	if value == "true" {
		if im.Extra == nil {
			im.Extra = map[string]string{}
		}
		im.Extra[KeyOSHidden] = "true" // a core key: its inode slot is fixed
	} else {
		delete(im.Extra, KeyOSHidden)
		delete(im.Slots, KeyOSHidden) // a custom os_hidden of an older record
	}
}

// AddTag adds tag to image id's tags for c (Glance's PUT
// /v2/images/{id}/tags/{tag}); a tag the image has already is no error
// (the record's updated_at still moves, as in Glance). Errors:
// ErrNotFound (image), ErrPermission (not the owner or root),
// ErrInvalid (ValidTag), ErrQuota (the tag quota), ErrCatalog,
// ErrUnavailable.
func (s *Store) AddTag(c Caller, id, tag string) error {
	if err := ValidTag(tag); err != nil {
		return err
	}
	return s.changeTags(c, id, "added", tag, func(tags []string) ([]string, error) {
		return append(tags, tag), nil
	})
}

// RemoveTag removes tag from image id's tags for c (Glance's DELETE
// /v2/images/{id}/tags/{tag}). Unlike removing a property, it is allowed
// on a protected image, as in Glance. Errors: ErrNotFound (the image, or
// ErrNoTag: it has no such tag), ErrPermission, ErrCatalog,
// ErrUnavailable.
func (s *Store) RemoveTag(c Caller, id, tag string) error {
	return s.changeTags(c, id, "removed", tag, func(tags []string) ([]string, error) {
		i := slices.Index(tags, tag)
		if i < 0 {
			return nil, fmt.Errorf("%w: image %s has no tag %q", ErrNoTag, id, tag)
		}
		return slices.Delete(tags, i, i+1), nil
	})
}

// ErrNoTag: RemoveTag of a tag the image does not have. It wraps
// ErrNotFound.
var ErrNoTag = fmt.Errorf("%w: no such tag", ErrNotFound)

// changeTags changes image id's tag set by f, in one commit under the
// rules of setting the tags property (so on the record as it is then: a
// concurrent change of another tag is not lost).
func (s *Store) changeTags(c Caller, id, verb, tag string, f func([]string) ([]string, error)) error {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if err := mayModify(c, im); err != nil {
			return nil, err
		}
		tags, err := f(ParseTags(im.Extra[KeyTags]))
		if err != nil {
			return nil, err
		}
		value := FormatTags(tags)
		if err := s.setPropertyRules(c, im, KeyTags, value, SetAny); err != nil {
			return nil, err
		}
		next := im.clone()
		applyValue(next, KeyTags, value)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		if err := checkRecordSize(next); err != nil {
			return nil, err
		}
		return next, nil
	})
	if err != nil {
		s.log.Warn("tag change refused", "id", id, "tag", tag, "uid", c.UID, "err", err)
		return err
	}
	s.log.Info("tag "+verb, "id", id, "tag", tag, "uid", c.UID)
	return nil
}
