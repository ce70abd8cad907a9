package bridge

import (
	"reflect"
	"sort"
	"testing"
)

func shards(ids ...string) []Shard {
	out := make([]Shard, len(ids))
	for i, id := range ids {
		out[i] = Shard{ID: id}
	}
	return out
}

func set(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func TestEligible(t *testing.T) {
	split := []Shard{{ID: "p"}, {ID: "c1", Parents: []string{"p"}}, {ID: "c2", Parents: []string{"p"}}}
	merge := []Shard{{ID: "a"}, {ID: "b"}, {ID: "m", Parents: []string{"a", "b"}}}
	tests := []struct {
		name     string
		shards   []Shard
		finished map[string]bool
		want     []string
	}{
		{"plain shards", shards("s0", "s1"), nil, []string{"s0", "s1"}},
		{"finished shard is not read again", shards("s0", "s1"), set("s0"), []string{"s1"}},
		{"parent without checkpoint is read first", split, nil, []string{"p"}},
		{"children after the parent's SHARD_END", split, set("p"), []string{"c1", "c2"}},
		{"merge waits for both parents", merge, set("a"), []string{"b"}},
		{"merge after both parents", merge, set("a", "b"), []string{"m"}},
		{"parent trimmed away (not listed)", []Shard{{ID: "c", Parents: []string{"gone"}}}, nil, []string{"c"}},
		{"everything finished", split, set("p", "c1", "c2"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Eligible(tt.shards, tt.finished); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Eligible = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestFairShareAndTarget(t *testing.T) {
	tests := []struct {
		n       int
		members []string
		self    string
		share   int
		want    int
	}{
		{4, nil, "a", 4, 4},
		{4, []string{"a", "b"}, "b", 2, 2},
		{4, []string{"a", "b", "c"}, "a", 2, 2},
		{4, []string{"a", "b", "c"}, "b", 2, 1},
		{4, []string{"a", "b", "c"}, "c", 2, 1},
		{2, []string{"a", "b", "c"}, "c", 1, 0},
		{4, []string{"b", "c"}, "a", 2, 2}, // self missing from the members seen
		{0, []string{"a"}, "a", 0, 0},
	}
	for _, tt := range tests {
		if got := FairShare(tt.n, len(uniqueWith(tt.members, tt.self))); got != tt.share {
			t.Errorf("FairShare(%d, %v+%s) = %d; want %d", tt.n, tt.members, tt.self, got, tt.share)
		}
		if got := Target(tt.n, tt.members, tt.self); got != tt.want {
			t.Errorf("Target(%d, %v, %s) = %d; want %d", tt.n, tt.members, tt.self, got, tt.want)
		}
	}
	// Targets add up to n for every membership.
	for n := 0; n < 9; n++ {
		for r := 1; r < 5; r++ {
			ms := []string{"a", "b", "c", "d"}[:r]
			sum := 0
			for _, m := range ms {
				sum += Target(n, ms, m)
			}
			if sum != n {
				t.Errorf("targets of %d shards over %v add up to %d", n, ms, sum)
			}
		}
	}
}

func TestAssign(t *testing.T) {
	four := shards("s0", "s1", "s2", "s3")
	tests := []struct {
		name string
		v    View
		take int      // how many to take (which ones is spread per replica)
		from []string // the shards Take must come from
		rel  []string
	}{
		{"alone: takes everything", View{Self: "a", Shards: four}, 4, []string{"s0", "s1", "s2", "s3"}, nil},
		{"live lease of another is left alone", View{Self: "a", Shards: four, Members: []string{"a", "b"},
			Leases: map[string]Lease{"s0": {Owner: "b"}, "s1": {Owner: "b"}}}, 2, []string{"s2", "s3"}, nil},
		{"expired lease is taken over", View{Self: "a", Shards: four, Members: []string{"a"},
			Leases: map[string]Lease{"s0": {Owner: "dead", Expired: true}, "s1": {Owner: "dead", Expired: true}}}, 4, []string{"s0", "s1", "s2", "s3"}, nil},
		{"own stale lease is free", View{Self: "a", Shards: shards("s0"), Leases: map[string]Lease{"s0": {Owner: "a"}}}, 1, []string{"s0"}, nil},
		{"a replica joined: over-share releases", View{Self: "a", Shards: four, Members: []string{"a", "b"},
			Held: set("s0", "s1", "s2", "s3"), Leases: map[string]Lease{"s0": {Owner: "a"}, "s1": {Owner: "a"}, "s2": {Owner: "a"}, "s3": {Owner: "a"}}},
			0, nil, []string{"s3", "s2"}},
		{"releasing ones count: no second release", View{Self: "a", Shards: four, Members: []string{"a", "b"},
			Held: set("s0", "s1", "s2", "s3"), Releases: set("s2", "s3")}, 0, nil, nil},
		{"at target: nothing to do", View{Self: "b", Shards: four, Members: []string{"a", "b", "c"},
			Held: set("s3"), Leases: map[string]Lease{"s0": {Owner: "a"}, "s1": {Owner: "a"}, "s2": {Owner: "c"}, "s3": {Owner: "b"}}}, 0, nil, nil},
		{"children wait for the parent", View{Self: "a", Shards: []Shard{{ID: "p"}, {ID: "c1", Parents: []string{"p"}}, {ID: "c2", Parents: []string{"p"}}}},
			1, []string{"p"}, nil},
		{"finished shards hold no target", View{Self: "b", Shards: four, Members: []string{"a", "b"}, Finished: set("s0", "s1"),
			Leases: map[string]Lease{"s2": {Owner: "a"}}}, 1, []string{"s3"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.v.Held == nil {
				tt.v.Held = map[string]bool{}
			}
			got := Assign(tt.v)
			if len(got.Take) != tt.take {
				t.Errorf("Assign took %v; want %d of %v", got.Take, tt.take, tt.from)
			}
			for _, id := range got.Take {
				if !contains(tt.from, id) {
					t.Errorf("Assign took %s; want only from %v", id, tt.from)
				}
			}
			rel := append([]string(nil), got.Release...)
			sort.Sort(sort.Reverse(sort.StringSlice(rel)))
			if !reflect.DeepEqual(rel, tt.rel) && !(len(rel) == 0 && len(tt.rel) == 0) {
				t.Errorf("Assign released %v; want %v", got.Release, tt.rel)
			}
		})
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
