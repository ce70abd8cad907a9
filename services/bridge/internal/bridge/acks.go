package bridge

// acks tracks which records of one shard have been published, in the order
// they were read, so that only a contiguous prefix is ever checkpointed.
// A record is done when every message made from it (one, or one per KPL user
// record) has its PubAck, or went to the DLQ. Acks arrive in any order.
//
// The design names Jeffail/checkpoint (Redpanda Connect's Kinesis input) for
// this; it is not available from the module proxy here, so this is the same
// idea in a few lines. It is not safe for concurrent use: the shard guards it.
type acks struct {
	base    uint64   // index of pending[0]
	pending []record // read, not yet below the frontier
	done    string   // sequence number of the last record of the contiguous done prefix
	mark    string   // the same, but only advanced at the end of a GetRecords batch
	// markCount is how many records mark covers (base counts those done).
	markCount uint64
}

type record struct {
	seq      string
	left     int  // messages still waiting for their PubAck
	batchEnd bool // last record of a GetRecords batch
}

// add appends a record of parts messages (at least one) and returns its index.
func (a *acks) add(seq string, parts int, batchEnd bool) uint64 {
	if parts < 1 {
		parts = 1
	}
	a.pending = append(a.pending, record{seq: seq, left: parts, batchEnd: batchEnd})
	return a.base + uint64(len(a.pending)-1)
}

// ack records one PubAck of record i. It reports whether the checkpoint
// mark moved: the contiguous done prefix passed the end of a batch.
func (a *acks) ack(i uint64) (moved bool) {
	if i < a.base || i >= a.base+uint64(len(a.pending)) {
		return false // already below the frontier: a repeated ack
	}
	r := &a.pending[i-a.base]
	if r.left > 0 {
		r.left--
	}
	n := 0
	for n < len(a.pending) && a.pending[n].left == 0 {
		a.done = a.pending[n].seq
		if a.pending[n].batchEnd {
			a.mark, a.markCount, moved = a.done, a.base+uint64(n)+1, true
		}
		n++
	}
	if n > 0 {
		a.pending = a.pending[n:]
		a.base += uint64(n)
		if len(a.pending) == 0 {
			a.pending = nil // let the backing array go
		}
	}
	return moved
}

// inFlight is how many read records are not done yet.
func (a *acks) inFlight() int { return len(a.pending) }
