package subject

import (
	"regexp"
	"testing"
)

// kvKey is the key syntax nats.go's KV accepts; a subject token additionally may not hold '.'.
var kvKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func TestToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"platform/core", "platform_2Fcore"},
		{"a.b_c", "a_2Eb_5Fc"},
		{"tools/**", "tools_2F_2A_2A"},
		{"", "_"},
		{"patchset-created", "patchset-created"},
		{"ü", "_C3_BC"},
		{"a b>c*", "a_20b_3Ec_2A"},
	}
	for _, tt := range tests {
		got := Token(tt.in)
		if got != tt.want {
			t.Errorf("Token(%q) = %q; want %q", tt.in, got, tt.want)
		}
		if !kvKey.MatchString(got) || regexp.MustCompile(`[.*> ]`).MatchString(got) {
			t.Errorf("Token(%q) = %q is not a safe subject token and key part", tt.in, got)
		}
		back, err := Untoken(got)
		if err != nil || back != tt.in {
			t.Errorf("Untoken(%q) = %q, %v; want %q", got, back, err, tt.in)
		}
	}
}

func TestUntokenErrors(t *testing.T) {
	for _, in := range []string{"a_", "a_2", "a_ZZ"} {
		if _, err := Untoken(in); err == nil {
			t.Errorf("Untoken(%q) = nil error; want an error", in)
		}
	}
}

func TestKeys(t *testing.T) {
	if got, want := ChangeKey("platform/core", 1234), "platform_2Fcore.1234"; got != want {
		t.Errorf("ChangeKey = %q; want %q", got, want)
	}
	if got, want := BuildKey("1234-2-abc", "folder/unit-tests"), "1234-2-abc.folder_2Funit-tests"; got != want {
		t.Errorf("BuildKey = %q; want %q", got, want)
	}
	if got, want := ShardKey("gerrit-events", "shardId-000000000001"), "gerrit-events.shardId-000000000001"; got != want {
		t.Errorf("ShardKey = %q; want %q", got, want)
	}
	if got, want := Event("patchset-created"), "gerrit.events.patchset-created"; got != want {
		t.Errorf("Event = %q; want %q", got, want)
	}
	if got, want := Event("x.y"), "gerrit.events.x_2Ey"; got != want {
		t.Errorf("Event = %q; want %q", got, want)
	}
}
