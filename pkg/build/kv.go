package build

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/stage"
)

// Update applies change to the JSON record at key until a compare-and-set
// succeeds: Create when the key is new, Update with the revision read
// otherwise; a conflict re-reads and decides again, never a blind Put.
// change returns false when nothing needs writing. It returns the record as
// stored; ErrKeyNotFound when the key is absent and change declined to create it.
func Update[T any](ctx context.Context, kv jetstream.KeyValue, key string, change func(cur *T, exists bool) bool) (T, error) {
	for attempt := 0; ; attempt++ {
		var cur T
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return cur, fmt.Errorf("get %s/%s: %w", kv.Bucket(), key, err)
		default:
			if err := Decode(e.Value(), &cur); err != nil {
				return cur, stage.Permanent(fmt.Errorf("%s/%s: %w", kv.Bucket(), key, err))
			}
			rev = e.Revision()
		}
		if !change(&cur, rev != 0) {
			if rev == 0 {
				return cur, jetstream.ErrKeyNotFound
			}
			return cur, nil
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, Encode(cur))
		} else {
			_, err = kv.Update(ctx, key, Encode(cur), rev)
		}
		if err == nil {
			return cur, nil
		}
		conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if !conflict || attempt >= 20 {
			return cur, fmt.Errorf("write %s/%s: %w", kv.Bucket(), key, err)
		}
	}
}
