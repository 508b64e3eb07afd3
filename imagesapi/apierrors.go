package imagesapi

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/imagefs/imagefs/store"
)

// Store refusals whose text speaks the mount's vocabulary (uids, root,
// image.vhd, shell commands) and the message the API gives instead.
var (
	reUID         = regexp.MustCompile(`\buid \d+\b`)
	reRoot        = regexp.MustCompile(`\broot\b`)
	reRecordQuota = regexp.MustCompile(`its record would be (\d+) bytes, limit (\d+)`)
	rePropQuota   = regexp.MustCompile(`has \d+ custom properties, limit (\d+)`)
)

// apiMessage is the message of the API's answer to the store error err
// for request r: Glance's message for the same refusal (glance/api/v2
// policy: "You are not authorized to complete ACTION action.",
// glance/common/exception.py), else the store's text when it speaks API
// terms. A 403 whose store text names a uid, root, a process or a mount
// file is Glance's policy message for r's action; such a text is not
// shown (it stays in the log, which fail writes).
func apiMessage(r *http.Request, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "only root may make an image public"):
		return "You are not authorized to complete publicize_image action."
	case strings.Contains(msg, "only root changes the owner"):
		return "You are not permitted to modify 'owner' on this image."
	case errors.Is(err, store.ErrQuota) && reRecordQuota.MatchString(msg):
		// The create's refusal named an id that was never made.
		m := reRecordQuota.FindStringSubmatch(msg)
		return fmt.Sprintf("The limit has been exceeded on the size of the image's properties (the sum of their keys and values). Attempted: %s bytes, Maximum: %s bytes", m[1], m[2])
	case errors.Is(err, store.ErrQuota) && rePropQuota.MatchString(msg):
		// Glance's ImagePropertyLimitExceeded, without the count attempted
		// (the store stops at the first property over).
		return "The limit has been exceeded on the number of allowed image properties. Maximum: " + rePropQuota.FindStringSubmatch(msg)[1]
	case errors.Is(err, store.ErrQuota) && strings.Contains(msg, "property inode slots"):
		return "The limit has been exceeded on the number of allowed image properties."
	case errors.Is(err, store.ErrPermission) && strings.Contains(msg, "a member changes only its own status"):
		return "You are not authorized to complete modify_member action."
	case storeStatus(err) == http.StatusForbidden && (reUID.MatchString(msg) || reRoot.MatchString(msg) || strings.Contains(msg, "image.vhd") || strings.Contains(msg, "(process ")):
		if a := policyAction(r); a != "" {
			return "You are not authorized to complete " + a + " action."
		}
		return "You are not authorized to complete this action."
	case strings.Contains(msg, "remove image.vhd to drop the staged data"):
		return strings.Replace(msg, "remove image.vhd to drop the staged data", "delete the image to drop the staged data", 1)
	case reUID.MatchString(msg):
		return http.StatusText(storeStatus(err)) + "."
	}
	return msg
}

// policyAction is the name of Glance's policy rule that r is checked
// against (glance/policies/image.py, image_member.py), or "".
func policyAction(r *http.Request) string {
	if r == nil {
		return ""
	}
	p := r.URL.Path
	switch {
	case strings.HasSuffix(p, "/file") && r.Method == http.MethodPut:
		return "upload_image"
	case strings.HasSuffix(p, "/file"):
		return "download_image"
	case strings.HasSuffix(p, "/stage"), strings.HasSuffix(p, "/import"):
		return "modify_image"
	case strings.Contains(p, "/members"):
		switch r.Method {
		case http.MethodGet:
			if strings.HasSuffix(p, "/members") {
				return "get_members"
			}
			return "get_member"
		case http.MethodPost:
			return "add_member"
		case http.MethodPut:
			return "modify_member"
		case http.MethodDelete:
			return "delete_member"
		}
	case strings.HasPrefix(p, "/v2/images/"):
		switch r.Method {
		case http.MethodDelete:
			if !strings.Contains(p, "/tags/") {
				return "delete_image"
			}
			return "modify_image"
		case http.MethodPatch, http.MethodPut:
			return "modify_image"
		}
	}
	return ""
}

// killReason is the API's text of an upload's kill reason (the store's
// speaks the mount's: `: > image.vhd`, "upload the VHD again").
func killReason(reason string) string {
	if strings.HasPrefix(reason, "upload empty") {
		return "the upload was empty (0 bytes)"
	}
	return reason
}
