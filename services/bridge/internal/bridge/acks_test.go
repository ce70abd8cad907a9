package bridge

import "testing"

func TestAcks(t *testing.T) {
	type rec struct {
		seq      string
		parts    int
		batchEnd bool
	}
	tests := []struct {
		name      string
		recs      []rec
		acks      []int // record indexes, one per PubAck
		wantDone  string
		wantMark  string
		wantCount uint64
		inFlight  int
	}{
		{"in order", []rec{{"1", 1, false}, {"2", 1, true}}, []int{0, 1}, "2", "2", 2, 0},
		{"a gap holds the checkpoint back", []rec{{"1", 1, false}, {"2", 1, false}, {"3", 1, true}}, []int{0, 2}, "1", "", 0, 2},
		{"out of order, then the gap fills", []rec{{"1", 1, false}, {"2", 1, false}, {"3", 1, true}}, []int{2, 1, 0}, "3", "3", 3, 0},
		{"mark only at batch ends", []rec{{"1", 1, true}, {"2", 1, false}, {"3", 1, true}, {"4", 1, false}}, []int{0, 1, 2, 3}, "4", "3", 3, 0},
		{"aggregate needs every user record", []rec{{"1", 3, true}}, []int{0, 0}, "", "", 0, 1},
		{"aggregate done", []rec{{"1", 3, false}, {"2", 1, true}}, []int{1, 0, 0, 0}, "2", "2", 2, 0},
		{"a repeated ack of a done record is ignored", []rec{{"1", 1, true}, {"2", 1, true}}, []int{0, 0, 0}, "1", "1", 1, 1},
		{"nothing acked", []rec{{"1", 1, true}}, nil, "", "", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a acks
			idx := make([]uint64, len(tt.recs))
			for i, r := range tt.recs {
				idx[i] = a.add(r.seq, r.parts, r.batchEnd)
			}
			for _, i := range tt.acks {
				a.ack(idx[i])
			}
			if a.done != tt.wantDone || a.mark != tt.wantMark || a.markCount != tt.wantCount || a.inFlight() != tt.inFlight {
				t.Errorf("after acks %v: done %q mark %q markCount %d inFlight %d; want %q %q %d %d",
					tt.acks, a.done, a.mark, a.markCount, a.inFlight(), tt.wantDone, tt.wantMark, tt.wantCount, tt.inFlight)
			}
		})
	}
}

func TestAcksMovedReportsMarks(t *testing.T) {
	var a acks
	i0 := a.add("1", 1, false)
	i1 := a.add("2", 1, true)
	if a.ack(i1) {
		t.Errorf("ack of 2 before 1 moved the mark")
	}
	if !a.ack(i0) {
		t.Errorf("ack of 1 completing the batch did not move the mark")
	}
	i2 := a.add("3", 1, true)
	if !a.ack(i2) || a.mark != "3" || a.base != 3 {
		t.Errorf("next batch: mark %q base %d; want 3 3", a.mark, a.base)
	}
}
