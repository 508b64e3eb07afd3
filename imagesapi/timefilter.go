package imagesapi

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store"
)

// timeFilter is one created_at or updated_at filter of GET /v2/images, as
// Glance's: "[OP:]TIME", OP one of eq (the default), neq, gt, gte, lt,
// lte, TIME in ISO 8601 (2026-12-07T14:37:26Z, an offset such as +01:00,
// no zone meaning UTC, or a date alone). Times compare at the second, the
// precision the API shows.
type timeFilter struct {
	key string // created_at or updated_at
	op  string
	at  time.Time
}

// timeLayouts are the ISO 8601 forms a time filter takes.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02T15:04Z07:00", "2006-01-02"}

func parseISOTime(s string) (time.Time, bool) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// timeFilters reads the created_at and updated_at filters of q. The
// error is Glance's 400 message: a time that is not ISO 8601, or an
// operator it does not know.
func timeFilters(q url.Values) ([]timeFilter, error) {
	var out []timeFilter
	for _, key := range []string{store.KeyCreatedAt, store.KeyUpdatedAt} {
		for _, v := range q[key] {
			// As Glance's split_filter_op: a whole ISO time (it holds
			// colons) is eq; otherwise OP:TIME.
			op, ts := "eq", v
			if _, ok := parseISOTime(v); !ok {
				if left, right, found := strings.Cut(v, ":"); found {
					op, ts = left, right
				}
			}
			at, ok := parseISOTime(ts)
			if !ok {
				return nil, fmt.Errorf("Bad %q query filter format. Use ISO 8601 DateTime notation.", key)
			}
			switch op {
			case "eq", "neq", "gt", "gte", "lt", "lte":
			default:
				return nil, fmt.Errorf("Unable to filter on a unknown operator.")
			}
			out = append(out, timeFilter{key, op, at.Truncate(time.Second)})
		}
	}
	return out, nil
}

// match reports whether im's time passes the filter.
func (f timeFilter) match(im *store.Image) bool {
	t := im.CreatedAt
	if f.key == store.KeyUpdatedAt {
		t = im.UpdatedAt
	}
	c := t.UTC().Truncate(time.Second).Compare(f.at)
	switch f.op {
	case "eq":
		return c == 0
	case "neq":
		return c != 0
	case "gt":
		return c > 0
	case "gte":
		return c >= 0
	case "lt":
		return c < 0
	default: // lte
		return c <= 0
	}
}
