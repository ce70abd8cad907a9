package stack

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sample is one reading of a service process's own /metrics: its resident
// memory and its goroutines, as the Prometheus Go and process collectors
// report them.
type Sample struct {
	Service    string
	Index, PID int
	At         time.Time
	RSS        float64 // process_resident_memory_bytes
	Goroutines float64 // go_goroutines
	Heap       float64 // go_memstats_heap_inuse_bytes (0 if absent)
}

// Name is "<service>-<index>", as the process's log file is named.
func (s Sample) Name() string { return fmt.Sprintf("%s-%d", s.Service, s.Index) }

// Sample reads the process's /metrics.
func (p *Proc) Sample(ctx context.Context) (Sample, error) {
	smp := Sample{Service: p.Name, Index: p.Index, PID: p.PID(), At: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/metrics", nil)
	if err != nil {
		return smp, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return smp, fmt.Errorf("%s: metrics: %w", smp.Name(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return smp, fmt.Errorf("%s: metrics: %s", smp.Name(), resp.Status)
	}
	want := map[string]*float64{
		"process_resident_memory_bytes": &smp.RSS,
		"go_goroutines":                 &smp.Goroutines,
		"go_memstats_heap_inuse_bytes":  &smp.Heap,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if dst, wanted := want[name]; ok && wanted {
			if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
				*dst = v
				found++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return smp, fmt.Errorf("%s: metrics: %w", smp.Name(), err)
	}
	if smp.RSS == 0 || smp.Goroutines == 0 {
		return smp, fmt.Errorf("%s: metrics: no process_resident_memory_bytes or go_goroutines", smp.Name())
	}
	return smp, nil
}

// Samples reads every service process's /metrics, in pipeline order; a
// process that does not answer is left out and its error returned with the rest.
func (s *Stack) Samples(ctx context.Context) ([]Sample, []error) {
	var out []Sample
	var errs []error
	for _, name := range Services {
		for _, p := range s.Procs(name) {
			smp, err := p.Sample(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, smp)
		}
	}
	return out, errs
}
