package bridge

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// kplMagic starts a record written by the Kinesis Producer Library with
// aggregation on: magic, protobuf AggregatedRecord, MD5 of the protobuf.
var kplMagic = []byte{0xF3, 0x89, 0x9A, 0xC2}

const kplDigestLen = md5.Size

// UserRecord is one record of a KPL aggregate.
type UserRecord struct {
	PartitionKey    string
	ExplicitHashKey string
	Data            []byte
}

// IsAggregated reports whether data is a KPL aggregate (by its magic bytes).
func IsAggregated(data []byte) bool { return bytes.HasPrefix(data, kplMagic) }

// Deaggregate splits a KPL aggregate into its user records. The protobuf is
// decoded by hand (no generated code):
//
//	AggregatedRecord { repeated string partition_key_table = 1;
//	                   repeated string explicit_hash_key_table = 2;
//	                   repeated Record records = 3; }
//	Record { uint64 partition_key_index = 1; uint64 explicit_hash_key_index = 2;
//	         bytes data = 3; repeated Tag tags = 4; }
//
// A digest mismatch, a malformed protobuf, an index outside its table or an
// aggregate without records is an error: the record goes to the DLQ (the
// KCL would pass such a record on as it is; gerritflow wants it seen).
func Deaggregate(data []byte) ([]UserRecord, error) {
	if !IsAggregated(data) {
		return nil, errors.New("kpl: no magic bytes")
	}
	if len(data) < len(kplMagic)+kplDigestLen {
		return nil, fmt.Errorf("kpl: aggregate of %d bytes is too short", len(data))
	}
	msg := data[len(kplMagic) : len(data)-kplDigestLen]
	sum := md5.Sum(msg)
	if !bytes.Equal(sum[:], data[len(data)-kplDigestLen:]) {
		return nil, errors.New("kpl: MD5 digest mismatch")
	}
	var pkeys, ehkeys []string
	type raw struct {
		pk, ehk    uint64
		hasEHK     bool
		data       []byte
		hasPK, has bool
	}
	var recs []raw
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, fmt.Errorf("kpl: aggregate: %w", protowire.ParseError(n))
		}
		msg = msg[n:]
		if typ != protowire.BytesType || num < 1 || num > 3 {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return nil, fmt.Errorf("kpl: aggregate field %d: %w", num, protowire.ParseError(n))
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return nil, fmt.Errorf("kpl: aggregate field %d: %w", num, protowire.ParseError(n))
		}
		msg = msg[n:]
		switch num {
		case 1:
			pkeys = append(pkeys, string(v))
		case 2:
			ehkeys = append(ehkeys, string(v))
		case 3:
			var r raw
			for len(v) > 0 {
				fnum, ftyp, m := protowire.ConsumeTag(v)
				if m < 0 {
					return nil, fmt.Errorf("kpl: record %d: %w", len(recs), protowire.ParseError(m))
				}
				v = v[m:]
				switch {
				case fnum == 1 && ftyp == protowire.VarintType:
					r.pk, m = protowire.ConsumeVarint(v)
					r.hasPK = true
				case fnum == 2 && ftyp == protowire.VarintType:
					r.ehk, m = protowire.ConsumeVarint(v)
					r.hasEHK = true
				case fnum == 3 && ftyp == protowire.BytesType:
					var d []byte
					d, m = protowire.ConsumeBytes(v)
					r.data, r.has = d, true
				default: // tags (4) and unknown fields
					m = protowire.ConsumeFieldValue(fnum, ftyp, v)
				}
				if m < 0 {
					return nil, fmt.Errorf("kpl: record %d field %d: %w", len(recs), fnum, protowire.ParseError(m))
				}
				v = v[m:]
			}
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil, errors.New("kpl: aggregate without records")
	}
	out := make([]UserRecord, len(recs))
	for i, r := range recs {
		if !r.hasPK || !r.has {
			return nil, fmt.Errorf("kpl: record %d lacks its partition_key_index or data", i)
		}
		if r.pk >= uint64(len(pkeys)) {
			return nil, fmt.Errorf("kpl: record %d: partition_key_index %d outside a table of %d", i, r.pk, len(pkeys))
		}
		out[i] = UserRecord{PartitionKey: pkeys[r.pk], Data: r.data}
		if r.hasEHK {
			if r.ehk >= uint64(len(ehkeys)) {
				return nil, fmt.Errorf("kpl: record %d: explicit_hash_key_index %d outside a table of %d", i, r.ehk, len(ehkeys))
			}
			out[i].ExplicitHashKey = ehkeys[r.ehk]
		}
	}
	return out, nil
}
