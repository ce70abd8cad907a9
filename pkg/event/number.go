package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
)

// Number decodes a JSON int or a JSON string holding an int ("42"), as Gerrit
// versions differ. It encodes as a JSON number.
type Number int

// UnmarshalJSON implements json.Unmarshaler. null leaves n unchanged.
func (n *Number) UnmarshalJSON(data []byte) error {
	v, err := decodeInt(data, reflect.TypeFor[Number]())
	if err != nil {
		return err
	}
	if v != nil {
		*n = Number(*v)
	}
	return nil
}

// Value is an approval value. It decodes "2", "-1", "+1" or 2, and encodes as a
// JSON number.
type Value int

// UnmarshalJSON implements json.Unmarshaler. null leaves v unchanged.
func (v *Value) UnmarshalJSON(data []byte) error {
	i, err := decodeInt(data, reflect.TypeFor[Value]())
	if err != nil {
		return err
	}
	if i != nil {
		*v = Value(*i)
	}
	return nil
}

// decodeInt decodes a JSON int, or a JSON string holding one, into an int. It
// returns nil for null. Its errors are *json.UnmarshalTypeError so that
// encoding/json adds the field path (change.number).
func decodeInt(data []byte, t reflect.Type) (*int, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, &json.UnmarshalTypeError{Value: "nothing", Type: t}
	}
	switch data[0] {
	case 'n':
		return nil, nil
	case '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(s)
		if err != nil {
			return nil, &json.UnmarshalTypeError{Value: "string " + strconv.Quote(clip(s)) + " (not an int)", Type: t}
		}
		return &i, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		i, err := strconv.Atoi(string(data))
		if err != nil {
			return nil, &json.UnmarshalTypeError{Value: "number " + clip(string(data)), Type: t}
		}
		return &i, nil
	}
	return nil, &json.UnmarshalTypeError{Value: jsonKind(data), Type: t}
}

// jsonKind names the kind of the JSON value that starts data.
func jsonKind(data []byte) string {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 {
		return "nothing"
	}
	switch data[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// clip shortens s for an error message; messages go into a NATS header.
func clip(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	// Cut on a rune boundary.
	i := limit
	for i > 0 && !isRuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
