package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error Parse returns: the record can never be
// parsed, so redelivery cannot help.
var ErrInvalid = errors.New("invalid gerrit event")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Parse decodes one Kinesis record's data: one Gerrit stream event as the
// events-aws-kinesis plugin writes it, or wrapped in an events-broker envelope
// ({"header":{...},"body":{...}}, as GerritForge's broker library writes),
// which it unwraps. Unknown fields are ignored; unknown types parse.
//
// Every error wraps ErrInvalid and names the problem: input over maxSize bytes
// (maxSize <= 0: no limit), empty input, bytes that are not UTF-8 or not JSON,
// truncated JSON, a JSON value that is not an object, a missing or empty type,
// a field of the wrong JSON type (by its path: "change.number: want int or
// string, got object"), and required fields a known type lacks.
func Parse(data []byte, maxSize int) (*Event, error) {
	if maxSize > 0 && len(data) > maxSize {
		return nil, invalidf("%d bytes, over the limit of %d", len(data), maxSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, invalidf("empty input")
	}
	if !utf8.Valid(data) {
		return nil, invalidf("not UTF-8 text (binary data?) at offset %d", invalidUTF8At(data))
	}
	if err := checkSyntax(data); err != nil {
		return nil, err
	}
	if k := jsonKind(data); k != "object" {
		return nil, invalidf("want a JSON object, got %s", k)
	}

	raw := data
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, invalidf("%v", err) // not reached: the syntax is checked
	}
	var instanceID string
	if _, ok := top["type"]; !ok {
		if body, ok := top["body"]; ok {
			var err error
			if raw, instanceID, err = unwrap(body, top["header"]); err != nil {
				return nil, err
			}
			top = nil
			_ = json.Unmarshal(raw, &top) // an object: checked by unwrap
		}
	}
	if _, ok := top["type"]; !ok {
		return nil, invalidf("missing type")
	}

	ev := &Event{}
	if err := json.Unmarshal(raw, ev); err != nil {
		return nil, decodeError("", raw, err)
	}
	if strings.TrimSpace(ev.Type) == "" {
		return nil, invalidf("empty type")
	}
	ev.Raw = bytes.Clone(raw)
	normalize(ev, instanceID)
	if err := checkRequired(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// unwrap returns the event inside an events-broker envelope, and the header's
// sourceInstanceId.
func unwrap(body, header json.RawMessage) (json.RawMessage, string, error) {
	if k := jsonKind(body); k != "object" {
		return nil, "", invalidf("envelope body: want object, got %s", k)
	}
	var h struct {
		SourceInstanceID string `json:"sourceInstanceId"`
	}
	if len(header) > 0 {
		if err := json.Unmarshal(header, &h); err != nil {
			return nil, "", decodeError("header", header, err)
		}
	}
	return body, h.SourceInstanceID, nil
}

// checkSyntax reports JSON syntax errors, telling truncated input apart.
func checkSyntax(data []byte) error {
	if json.Valid(data) {
		return nil
	}
	var v json.RawMessage
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	switch {
	case err == nil:
		return invalidf("not JSON") // not reached: json.Valid said no
	case errors.As(err, &se) && se.Error() == "unexpected end of JSON input":
		return invalidf("truncated JSON: input ends after %d bytes", len(data))
	case errors.As(err, &se):
		return invalidf("not JSON: %s at offset %d", se.Error(), se.Offset-1) // Offset counts the bad byte
	}
	return invalidf("not JSON: %v", err)
}

func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// decodeError turns an encoding/json error from decoding raw into one naming
// the field path, with array indices: approvals[1].value.
func decodeError(prefix string, raw []byte, err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return invalidf("%v", err)
	}
	field := te.Field
	if te.Type != nil && field != "" {
		if p, ok := locate(raw, strings.Split(field, "."), te.Type, te.Value); ok {
			field = strings.TrimPrefix(p, ".")
		}
	}
	if prefix != "" {
		field = strings.TrimSuffix(prefix+"."+field, ".")
	}
	if field == "" {
		field = "event"
	}
	return invalidf("%s: want %s, got %s", field, want(te.Type), te.Value)
}

// locate finds the path, with array indices, of the first value along segs
// that does not decode into t. encoding/json names the field without indices.
// got is the kind of the bad value as encoding/json reported it.
func locate(raw []byte, segs []string, t reflect.Type, got string) (string, bool) {
	k := jsonKind(raw)
	elementOf := len(segs) == 0 && got != "array" && t.Kind() != reflect.Slice && t.Kind() != reflect.Array
	if k == "array" && (len(segs) > 0 || elementOf) {
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return "", false
		}
		for i, el := range elems {
			if p, ok := locate(el, segs, t, got); ok {
				return fmt.Sprintf("[%d]%s", i, p), true
			}
		}
		return "", false
	}
	if len(segs) == 0 {
		return "", json.Unmarshal(raw, reflect.New(t).Interface()) != nil
	}
	if k != "object" {
		return "", false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return "", false
	}
	v, ok := m[segs[0]]
	if !ok {
		for key, kv := range m { // encoding/json matches keys case-insensitively
			if strings.EqualFold(key, segs[0]) {
				v, ok = kv, true
				break
			}
		}
	}
	if !ok {
		return "", false
	}
	p, ok := locate(v, segs[1:], t, got)
	return "." + segs[0] + p, ok
}

var (
	numberType = reflect.TypeFor[Number]()
	valueType  = reflect.TypeFor[Value]()
)

// want names the JSON a Go type decodes from.
func want(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t == numberType || t == valueType {
		return "int or string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Bool:
		return "bool"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return t.String()
}

// normalize fills Project, RefName, HeadName and InstanceID where Gerrit left
// them out, so that they mean the same for every type.
func normalize(ev *Event, instanceID string) {
	if ev.Project == "" {
		ev.Project = ev.ProjectName()
	}
	if ev.RefName == "" {
		switch {
		case ev.RefUpdate != nil && ev.RefUpdate.RefName != "":
			ev.RefName = ev.RefUpdate.RefName
		case ev.Change != nil && ev.Change.Branch != "":
			ev.RefName = "refs/heads/" + ev.Change.Branch
		}
	}
	if ev.HeadName == "" {
		ev.HeadName = ev.ProjectHead
	}
	if ev.InstanceID == "" {
		ev.InstanceID = instanceID
	}
}

// shape is what a known type must carry.
type shape struct {
	change, patchSet, refUpdate, projectName bool
}

var (
	changeOnly  = shape{change: true}
	withPatch   = shape{change: true, patchSet: true}
	requirement = map[string]shape{
		TypePatchsetCreated:     withPatch,
		TypeCommentAdded:        withPatch,
		TypeChangeMerged:        withPatch,
		TypeChangeAbandoned:     withPatch,
		TypeChangeRestored:      withPatch,
		TypeWIPStateChanged:     withPatch,
		TypePrivateStateChanged: withPatch,
		TypeReviewerAdded:       withPatch,
		TypeReviewerDeleted:     withPatch,
		TypeVoteDeleted:         withPatch,
		TypeChangeDeleted:       changeOnly,
		TypeTopicChanged:        changeOnly,
		TypeHashtagsChanged:     changeOnly,
		TypeRefUpdated:          {refUpdate: true},
		TypeProjectCreated:      {projectName: true},
	}
)

// checkRequired reports the fields a known type lacks, all of them at once.
func checkRequired(ev *Event) error {
	s, ok := requirement[ev.Type]
	if !ok {
		return nil
	}
	var missing []string
	miss := func(cond bool, name string) {
		if cond {
			missing = append(missing, name)
		}
	}
	if s.change {
		if ev.Change == nil {
			missing = append(missing, "change")
		} else {
			if ev.Change.Number < 0 {
				return invalidf("%s: change.number: want a positive int, got %d", ev.Type, ev.Change.Number)
			}
			miss(ev.Change.Project == "", "change.project")
			miss(ev.Change.Branch == "", "change.branch")
			miss(ev.Change.Number == 0, "change.number")
		}
	}
	if s.patchSet {
		if ev.PatchSet == nil {
			missing = append(missing, "patchSet")
		} else {
			if ev.PatchSet.Number < 0 {
				return invalidf("%s: patchSet.number: want a positive int, got %d", ev.Type, ev.PatchSet.Number)
			}
			miss(ev.PatchSet.Number == 0, "patchSet.number")
			miss(ev.PatchSet.Revision == "", "patchSet.revision")
		}
	}
	if s.refUpdate {
		if ev.RefUpdate == nil {
			missing = append(missing, "refUpdate")
		} else {
			miss(ev.RefUpdate.RefName == "", "refUpdate.refName")
			miss(ev.RefUpdate.Project == "", "refUpdate.project")
		}
	}
	if s.projectName {
		miss(ev.CreatedProject == "", "projectName")
	}
	if len(missing) > 0 {
		return invalidf("%s: missing %s", ev.Type, strings.Join(missing, ", "))
	}
	return nil
}
