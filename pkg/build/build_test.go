package build

import (
	"regexp"
	"testing"
)

func TestSetID(t *testing.T) {
	a := SetID(1234, 2, "patchset-created.1234.2.1700000000.abcd", "")
	if !regexp.MustCompile(`^1234-2-[0-9a-f]{16}$`).MatchString(a) {
		t.Errorf("SetID = %q; want 1234-2-<16 hex>", a)
	}
	if b := SetID(1234, 2, "patchset-created.1234.2.1700000000.abcd", ""); b != a {
		t.Errorf("SetID not stable: %q then %q", a, b)
	}
	if b := SetID(1234, 2, "patchset-created.1234.2.1700000000.abcd", "replay-1"); b == a {
		t.Errorf("a replayed event got the original build set id %q", b)
	}
	if b := SetID(1234, 2, "comment-added.1234.2.1700000050.ef01", ""); b == a {
		t.Errorf("a recheck comment got the same build set id %q", b)
	}
	if r := SetID(0, 0, "ref-updated.0.0.1.ab", ""); !regexp.MustCompile(`^ref-[0-9a-f]{16}$`).MatchString(r) {
		t.Errorf("SetID for ref-updated = %q", r)
	}
}

func TestEncodeDecode(t *testing.T) {
	in := Completed{BuildSet: "1-1-x", Job: "unit", Result: ResultFailure, Number: 7, Voting: true}
	var out Completed
	if err := Decode(Encode(in), &out); err != nil || out != in {
		t.Errorf("round trip = %+v, %v; want %+v", out, err, in)
	}
	if err := Decode([]byte("{"), &out); err == nil {
		t.Error("Decode({) = nil error")
	}
}
