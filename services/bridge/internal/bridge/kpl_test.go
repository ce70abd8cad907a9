package bridge

import (
	"bytes"
	"crypto/md5"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

type kplRec struct {
	pk, ehk int // indexes; ehk < 0: none
	data    string
	tag     bool
}

// aggregate builds a KPL aggregated record as the KPL writes it.
func aggregate(pkeys, ehkeys []string, recs []kplRec) []byte {
	var msg []byte
	for _, k := range pkeys {
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, k)
	}
	for _, k := range ehkeys {
		msg = protowire.AppendTag(msg, 2, protowire.BytesType)
		msg = protowire.AppendString(msg, k)
	}
	for _, r := range recs {
		var rb []byte
		rb = protowire.AppendTag(rb, 1, protowire.VarintType)
		rb = protowire.AppendVarint(rb, uint64(r.pk))
		if r.ehk >= 0 {
			rb = protowire.AppendTag(rb, 2, protowire.VarintType)
			rb = protowire.AppendVarint(rb, uint64(r.ehk))
		}
		rb = protowire.AppendTag(rb, 3, protowire.BytesType)
		rb = protowire.AppendBytes(rb, []byte(r.data))
		if r.tag {
			var tag []byte
			tag = protowire.AppendTag(tag, 1, protowire.BytesType)
			tag = protowire.AppendString(tag, "k")
			tag = protowire.AppendTag(tag, 2, protowire.BytesType)
			tag = protowire.AppendString(tag, "v")
			rb = protowire.AppendTag(rb, 4, protowire.BytesType)
			rb = protowire.AppendBytes(rb, tag)
		}
		msg = protowire.AppendTag(msg, 3, protowire.BytesType)
		msg = protowire.AppendBytes(msg, rb)
	}
	sum := md5.Sum(msg)
	out := append(append([]byte(nil), kplMagic...), msg...)
	return append(out, sum[:]...)
}

func TestDeaggregate(t *testing.T) {
	good := aggregate([]string{"patchset-created", "comment-added"}, []string{"123"}, []kplRec{
		{0, -1, `{"type":"patchset-created"}`, false},
		{1, 0, `{"type":"comment-added"}`, true},
		{0, -1, "", false},
	})
	badMD5 := append([]byte(nil), good...)
	badMD5[len(badMD5)-1] ^= 0xFF
	badIndex := aggregate([]string{"a"}, nil, []kplRec{{3, -1, "x", false}})
	tests := []struct {
		name    string
		data    []byte
		want    []UserRecord
		wantErr string
	}{
		{"three user records", good, []UserRecord{
			{PartitionKey: "patchset-created", Data: []byte(`{"type":"patchset-created"}`)},
			{PartitionKey: "comment-added", ExplicitHashKey: "123", Data: []byte(`{"type":"comment-added"}`)},
			{PartitionKey: "patchset-created", Data: []byte{}},
		}, ""},
		{"bad MD5", badMD5, nil, "MD5 digest mismatch"},
		{"partition key index outside the table", badIndex, nil, "partition_key_index 3 outside"},
		{"no records", aggregate([]string{"a"}, nil, nil), nil, "without records"},
		{"too short", append(append([]byte(nil), kplMagic...), 1, 2, 3), nil, "too short"},
		{"garbage protobuf with a right digest", func() []byte {
			msg := []byte{0x1a, 0xff, 0xff} // field 3, length beyond the end
			sum := md5.Sum(msg)
			return append(append(append([]byte(nil), kplMagic...), msg...), sum[:]...)
		}(), nil, "kpl: aggregate field 3"},
		{"not an aggregate", []byte(`{"type":"x"}`), nil, "no magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Deaggregate(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Deaggregate = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Deaggregate: %v", err)
			}
			for i := range got {
				if got[i].Data == nil {
					got[i].Data = []byte{}
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Deaggregate = %+v; want %+v", got, tt.want)
			}
		})
	}
	if !IsAggregated(good) || IsAggregated([]byte("{}")) || IsAggregated(bytes.Repeat([]byte{0xF3}, 3)) {
		t.Errorf("IsAggregated does not recognise the magic bytes")
	}
}
