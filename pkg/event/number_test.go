package event_test

import (
	"encoding/json"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
)

func TestNumberUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    event.Number
		wantErr string // "" means no error
	}{
		{`42`, 42, ""},
		{`"42"`, 42, ""},
		{`0`, 0, ""},
		{`"0"`, 0, ""},
		{`-3`, -3, ""},
		{`null`, 7, ""}, // null leaves the value as it was
		{`9223372036854775807`, 9223372036854775807, ""},
		{`"abc"`, 0, `json: cannot unmarshal string "abc" (not an int) into Go value of type event.Number`},
		{`""`, 0, `json: cannot unmarshal string "" (not an int) into Go value of type event.Number`},
		{`1.5`, 0, "json: cannot unmarshal number 1.5 into Go value of type event.Number"},
		{`1e3`, 0, "json: cannot unmarshal number 1e3 into Go value of type event.Number"},
		{`"1.5"`, 0, `json: cannot unmarshal string "1.5" (not an int) into Go value of type event.Number`},
		{`99999999999999999999`, 0, "json: cannot unmarshal number 99999999999999999999 into Go value of type event.Number"},
		{`{}`, 0, "json: cannot unmarshal object into Go value of type event.Number"},
		{`[]`, 0, "json: cannot unmarshal array into Go value of type event.Number"},
		{`true`, 0, "json: cannot unmarshal bool into Go value of type event.Number"},
	}
	for _, tt := range tests {
		n := event.Number(7)
		err := json.Unmarshal([]byte(tt.in), &n)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Unmarshal(%s) error = %v; want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || n != tt.want {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d, nil", tt.in, n, err, tt.want)
		}
	}
}

func TestValueUnmarshal(t *testing.T) {
	tests := []struct {
		in     string
		want   event.Value
		wantOK bool
	}{
		{`"2"`, 2, true},
		{`"-1"`, -1, true},
		{`"+1"`, 1, true},
		{`"0"`, 0, true},
		{`2`, 2, true},
		{`-2`, -2, true},
		{`"+2 "`, 0, false},
		{`"approved"`, 0, false},
		{`{"value":2}`, 0, false},
		{`2.0`, 0, false},
	}
	for _, tt := range tests {
		var v event.Value
		err := json.Unmarshal([]byte(tt.in), &v)
		if got := err == nil; got != tt.wantOK {
			t.Errorf("Unmarshal(%s) error = %v; want ok %v", tt.in, err, tt.wantOK)
			continue
		}
		if v != tt.want {
			t.Errorf("Unmarshal(%s) = %d; want %d", tt.in, v, tt.want)
		}
	}
}

// Number and Value encode as JSON numbers whatever form they came in.
func TestNumberValueMarshal(t *testing.T) {
	var a event.Approval
	if err := json.Unmarshal([]byte(`{"type":"Verified","value":"-1","oldValue":"+1"}`), &a); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"Verified","value":-1,"oldValue":1}`; string(got) != want {
		t.Errorf("Marshal(%+v) = %s; want %s", a, got, want)
	}

	c := event.Change{Number: 1234}
	got, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"number":1234}`; string(got) != want {
		t.Errorf("Marshal(Change{Number: 1234}) = %s; want %s", got, want)
	}
}
