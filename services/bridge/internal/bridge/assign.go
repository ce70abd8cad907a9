package bridge

import (
	"hash/fnv"
	"sort"
)

// ShardEnd is the checkpoint of a shard read to its end (the KCL's name).
const ShardEnd = "SHARD_END"

// Shard is what the assignment needs to know about one listed shard.
type Shard struct {
	ID      string
	Parents []string // ParentShardId and AdjacentParentShardId, when set
}

// Lease is a lease seen in the kinesis_leases bucket.
type Lease struct {
	Owner   string
	Expired bool // its revision has not changed for a whole TTL, as observed here
}

// View is what one replica knows at one scan: the listed shards, the
// checkpoints, the leases, the live replicas and what it runs itself.
type View struct {
	Self     string
	Shards   []Shard
	Finished map[string]bool  // checkpoint says SHARD_END
	Leases   map[string]Lease // by shard id
	Members  []string         // live replicas (Self is counted even if missing)
	Held     map[string]bool  // shards this replica runs now, releasing ones included
	Releases map[string]bool  // held shards already being released
}

// Plan is what a replica does after a scan: acquire Take (in that order) and
// hand Release over to others.
type Plan struct {
	Take    []string
	Release []string
}

// Eligible lists the shards that may be read now, sorted: not finished, and
// every parent finished or no longer listed (trimmed by retention). A child is
// thus read only after all its parents' checkpoints say SHARD_END, and a
// parent with no checkpoint is read first.
func Eligible(shards []Shard, finished map[string]bool) []string {
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	var out []string
	for _, s := range shards {
		if finished[s.ID] {
			continue
		}
		ok := true
		for _, p := range s.Parents {
			if p != "" && listed[p] && !finished[p] {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out
}

// FairShare is ceil(shards/replicas), the most shards one replica holds.
func FairShare(shards, replicas int) int {
	if replicas <= 0 {
		replicas = 1
	}
	return (shards + replicas - 1) / replicas
}

// Target is how many of n shards self should hold among members: the fair
// share ceil(n/r) for the first n mod r replicas in id order, floor(n/r) for
// the others. Every replica computes the same targets from the same view, and
// they add up to n, so the assignment converges without a leader.
func Target(n int, members []string, self string) int {
	ms := uniqueWith(members, self)
	r := len(ms)
	rank := sort.SearchStrings(ms, self)
	t := n / r
	if rank < n%r {
		t++
	}
	return t
}

// Assign decides which shards this replica takes and which it releases.
// It takes free eligible shards (no lease, an expired lease, or a stale lease
// of its own) up to its target, and releases the shards above its target so
// that a replica that joined can take them. It never takes a live lease of
// another replica: over-share replicas give shards up themselves, after
// their last checkpoint.
func Assign(v View) Plan {
	eligible := Eligible(v.Shards, v.Finished)
	target := Target(len(eligible), v.Members, v.Self)
	held := len(v.Held)
	var p Plan
	if over := held - target - len(v.Releases); over > 0 {
		var active []string
		for id := range v.Held {
			if !v.Releases[id] {
				active = append(active, id)
			}
		}
		// Give up the highest ids: children and later shards move, parents stay.
		sort.Sort(sort.Reverse(sort.StringSlice(active)))
		if over > len(active) {
			over = len(active)
		}
		p.Release = active[:over]
		return p
	}
	want := target - held
	if want <= 0 {
		return p
	}
	var free []string
	for _, id := range eligible {
		if v.Held[id] {
			continue
		}
		l, leased := v.Leases[id]
		if !leased || l.Expired || l.Owner == v.Self {
			free = append(free, id)
		}
	}
	// Replicas racing for the same free shards try them in different orders
	// (Create lets one win anyway; this only saves retries).
	sort.SliceStable(free, func(i, j int) bool { return spread(v.Self, free[i]) < spread(v.Self, free[j]) })
	if want > len(free) {
		want = len(free)
	}
	p.Take = free[:want]
	return p
}

func spread(self, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(self))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return h.Sum64()
}

func uniqueWith(members []string, self string) []string {
	seen := map[string]bool{self: true}
	out := []string{self}
	for _, m := range members {
		if m != "" && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}
