package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// ID is the event's semantic identity, the Nats-Msg-Id on gerrit.events.<type>:
//
//	<type>.<change>.<patch set>.<eventCreatedOn>.<16 hex of the SHA-256 of the canonical body>
//
// for example "patchset-created.1234.2.1700000000.5d41402abc4b2a76". Gerrit
// events carry no id of their own; the same event arriving as two Kinesis
// records (or once bare, once in an envelope) gets one ID, and two different
// events do not share one. The canonical body is Raw re-encoded through a map:
// key order and whitespace do not matter, number and string contents do. An
// Event built in code, without Raw, hashes its own JSON encoding.
//
// The ID holds only ASCII letters, digits, '-', '_' and '.': safe in a NATS header.
func (e *Event) ID() string {
	body := []byte(e.Raw)
	if len(body) == 0 {
		body, _ = json.Marshal(e) // cannot fail: plain fields only
	}
	sum := sha256.Sum256(canonical(body))
	return fmt.Sprintf("%s.%d.%d.%d.%s",
		idToken(e.Type), e.ChangeNumber(), e.PatchSetNumber(), e.EventCreatedOn,
		hex.EncodeToString(sum[:8]))
}

// canonical re-encodes JSON with sorted keys and no insignificant whitespace,
// keeping numbers as written. Input that is not JSON is returned as is.
func canonical(body []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return body
	}
	out, err := json.Marshal(v)
	if err != nil {
		return body
	}
	return out
}

// idToken makes an event type safe for an ID: characters other than ASCII
// letters, digits, '-' and '_' become '_', and it is at most 64 bytes. The body
// hash keeps types that map to one token apart.
func idToken(typ string) string {
	const limit = 64
	if typ == "" {
		return "unknown"
	}
	var b strings.Builder
	for i := 0; i < len(typ) && b.Len() < limit; i++ {
		c := typ[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
