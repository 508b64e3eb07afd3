package xattr

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestListSkipsNamesTooLong: a key of more than 250 bytes (held by a
// catalog from before such keys were refused) has no attribute name the
// kernel accepts; listxattr leaves it out, so getfattr -d does not fail
// on it.
func TestListSkipsNamesTooLong(t *testing.T) {
	k250, k251 := strings.Repeat("k", 250), strings.Repeat("k", 251)
	assert.Equal(t, []byte("user.a\x00user."+k250+"\x00"), List([]string{"a", k251, k250}))
}
