package service

import (
	"cmp"
	"slices"
	"strings"
)

// The coordinator's assignment table: where each watched rank reads its
// stripes from (WatchAssignment). Unlike PlanEpoch's assign, which is a
// pure function of the pool, the table is state: assignments are sticky,
// and the pool moves a stripe only when its loader leaves or when the
// stripes are unbalanced by more than one between two loaders (a loader
// joined). The table lives under the pool's mutex, so that every change of
// membership rebalances it at once.
//
// A restarted coordinator's pool reforms from the loaders' next beats,
// within its timeout, while the ranks come back watching with the
// addresses they read from. Until the pool is settled (a timeout after it
// was made) the table keeps what the ranks name and moves nothing, so a
// coordinator restart moves no stripe whose loader comes back in time.

// slotKey names one rank's assignment: the ranks of a job that ask for the
// same stripe count share one table.
type slotKey struct {
	job  planKey
	rank int
	k    int // stripes wanted, at least 1
}

func compareSlotKeys(a, b slotKey) int {
	return cmp.Or(strings.Compare(a.job.String(), b.job.String()), cmp.Compare(a.rank, b.rank), cmp.Compare(a.k, b.k))
}

// slot is one rank's assignment and the watches that follow it.
type slot struct {
	addrs    []string // stripe j is read from addrs[j]; empty while no loader serves
	gen      uint64   // counts changes of addrs, from 1
	watchers int
	changed  chan struct{} // closed, and replaced, when addrs change
}

// set replaces the slot's addresses and wakes its watchers when they
// differ.
func (s *slot) set(addrs []string) {
	if slices.Equal(s.addrs, addrs) && s.gen > 0 {
		return
	}
	s.addrs = addrs
	s.gen++
	close(s.changed)
	s.changed = make(chan struct{})
}

// servingLocked lists the loaders that take stripes (not draining),
// sorted, with a zero stripe count each.
func (p *pool) servingLocked() ([]string, map[string]int) {
	var addrs []string
	load := make(map[string]int)
	for a, m := range p.members {
		if !m.leaving {
			addrs = append(addrs, a)
			load[a] = 0
		}
	}
	slices.Sort(addrs)
	return addrs, load
}

// leastLoaded is the serving loader with the fewest stripes, ties to the
// smaller address, that is not in exclude; "" when there is none.
func leastLoaded(serving []string, load map[string]int, exclude []string) string {
	best := ""
	for _, a := range serving {
		if slices.Contains(exclude, a) {
			continue
		}
		if best == "" || load[a] < load[best] {
			best = a
		}
	}
	return best
}

// placeLocked picks a rank's stripes from the serving loaders: it keeps
// the addresses of want that serve (in their positions), replaces the
// others by the least loaded loaders, and gives the rank min(k, serving)
// stripes. It counts the stripes it gives in load.
func placeLocked(want []string, k int, serving []string, load map[string]int) []string {
	k = min(k, len(serving))
	var out []string
	for _, a := range want {
		if _, ok := load[a]; ok && !slices.Contains(out, a) {
			out = append(out, a)
		} else {
			out = append(out, "") // a hole, filled below in place
		}
	}
	for i, a := range out {
		if a == "" {
			if b := leastLoaded(serving, load, out); b != "" {
				out[i] = b
			}
		}
	}
	out = slices.DeleteFunc(out, func(a string) bool { return a == "" })
	if len(out) > k {
		out = out[:k]
	}
	for len(out) < k {
		out = append(out, leastLoaded(serving, load, out))
	}
	for _, a := range out {
		load[a]++
	}
	return out
}

// rebalanceLocked brings every slot in line with the pool after a change
// of membership: stripes on loaders that left move to the least loaded
// ones, ranks get as many stripes as they asked for that the pool allows,
// and while one loader holds two or more stripes more than another, one
// stripe moves from the most to the least loaded. Nothing else moves.
func (p *pool) rebalanceLocked() {
	if !p.settled {
		return // expireLocked rebalances once the pool is settled
	}
	serving, load := p.servingLocked()
	keys := make([]slotKey, 0, len(p.slots))
	for k := range p.slots {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareSlotKeys)
	// First what stays, counted, then what must move or grow.
	next := make(map[slotKey][]string, len(keys))
	for _, k := range keys {
		var keep []string
		for _, a := range p.slots[k].addrs {
			if _, ok := load[a]; ok {
				load[a]++
				keep = append(keep, a)
			} else {
				keep = append(keep, "")
			}
		}
		next[k] = keep
	}
	for _, k := range keys {
		addrs := next[k]
		for _, a := range addrs {
			if a != "" {
				load[a]-- // placeLocked counts them again
			}
		}
		next[k] = placeLocked(addrs, k.k, serving, load)
	}
	// Balance: each move lowers the spread; at most one move per stripe.
	for range len(keys) * maxStride {
		hi, lo := "", ""
		for _, a := range serving {
			if hi == "" || load[a] > load[hi] {
				hi = a
			}
			if lo == "" || load[a] < load[lo] {
				lo = a
			}
		}
		if hi == "" || load[hi]-load[lo] <= 1 {
			break
		}
		moved := false
		for _, k := range keys {
			addrs := next[k]
			if i := slices.Index(addrs, hi); i >= 0 && !slices.Contains(addrs, lo) {
				addrs[i] = lo
				load[hi]--
				load[lo]++
				moved = true
				break
			}
		}
		if !moved {
			break
		}
	}
	for _, k := range keys {
		s := p.slots[k]
		if !slices.Equal(s.addrs, next[k]) {
			p.log.Info("pool: stripes moved", "job", k.job.String(), "rank", k.rank, "from", s.addrs, "to", next[k])
			p.moves.Inc()
		}
		s.set(next[k])
	}
}

// watch adds a watcher to key's slot, making the slot when it is new from
// the addresses current (those that serve) and the least loaded loaders.
// It fails when the pool holds maxWatches watchers already.
func (p *pool) watch(key slotKey, current []string) (*slot, bool) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	if p.watchers >= p.maxWatches {
		return nil, false
	}
	s, ok := p.slots[key]
	if !ok {
		serving, load := p.servingLocked()
		for _, o := range p.slots {
			for _, a := range o.addrs {
				load[a]++
			}
		}
		s = &slot{changed: make(chan struct{})}
		if keep := distinct(current, key.k); !p.settled && len(keep) > 0 {
			s.set(keep) // the pool is reforming: trust the rank's loaders for now
		} else {
			s.set(placeLocked(current, key.k, serving, load))
		}
		p.slots[key] = s
	}
	s.watchers++
	p.watchers++
	return s, true
}

// distinct is the first k distinct non-empty addresses of addrs.
func distinct(addrs []string, k int) []string {
	var out []string
	for _, a := range addrs {
		if a != "" && len(out) < k && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// unwatch removes a watcher; the last one's slot goes. Nothing moves:
// the other ranks' streams stay where they are.
func (p *pool) unwatch(key slotKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watchers--
	if s := p.slots[key]; s != nil {
		if s.watchers--; s.watchers == 0 {
			delete(p.slots, key)
		}
	}
}

// current reads s after dropping silent loaders (which may move it).
func (p *pool) current(s *slot) ([]string, uint64, <-chan struct{}) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	return slices.Clone(s.addrs), s.gen, s.changed
}

// assigned replaces out[r] by the watched assignment of job's rank r for
// k stripes, where there is one, so that PlanEpoch (asked again after a
// stream failed) names the loaders the watch does.
func (p *pool) assigned(job planKey, k int, out [][]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for r := range out {
		if s := p.slots[slotKey{job: job, rank: r, k: k}]; s != nil && len(s.addrs) > 0 {
			out[r] = slices.Clone(s.addrs)
		}
	}
}
