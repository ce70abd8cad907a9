package chaos

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Report prints the run: the workload, the faults injected, every invariant
// and, last, the summary line.
func Report(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\nchaos: seed %d, %d events over %v, replicas %s\n", r.Opts.Seed, r.Events, r.PlayTime.Round(time.Second), replicas(r.Opts.Replicas))
	fmt.Fprintln(w, "\nWorkload")
	for _, a := range ActionOrder {
		fmt.Fprintf(w, "  %-36s %6d\n", a, r.Actions[a])
	}
	fmt.Fprintf(w, "  %-36s %6d  (Gerrit's events, its ref-updated noise and the CI account's own reviews included)\n", "Kinesis records", r.Records)
	fmt.Fprintf(w, "  %-36s %6d\n", "build sets", r.BuildSets)
	fmt.Fprintf(w, "  %-36s %6d\n", "Jenkins builds", r.Builds)
	fmt.Fprintf(w, "  %-36s %6d\n", "reviews posted", r.Reviews)

	fmt.Fprintln(w, "\nFaults injected")
	fmt.Fprintf(w, "  %-30s %6s %10s  %s\n", "kind", "count", "total", "detail")
	for _, row := range summarize(r.Faults) {
		detail := row.Targets()
		if row.Failed > 0 {
			detail = fmt.Sprintf("%d FAILED %s", row.Failed, detail)
		}
		fmt.Fprintf(w, "  %-30s %6d %10v  %s\n", row.Kind, row.Count, row.Total.Round(100*time.Millisecond), detail)
	}

	printRecoveries(w, r)
	fmt.Fprintln(w)
	printInvariants(w, r)
	fmt.Fprintf(w, "\nTime: %v playing under faults, %v to settle, %v in all\n",
		r.PlayTime.Round(time.Second), r.SettleTime.Round(time.Second), r.Total.Round(time.Second))
	if n := r.Breaches(); n > 0 {
		fmt.Fprintf(w, "breaches=%d: the same workload and faults again with --seed %d; every service's log is in %s/logs\n", n, r.Opts.Seed, r.Opts.Dir)
	} else {
		fmt.Fprintln(w, "breaches=0")
	}
	fmt.Fprintln(w, r.Line())
}

func replicas(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// printInvariants prints one line per invariant, with a few examples of
// each breach.
func printInvariants(w io.Writer, r *Result) {
	fmt.Fprintln(w, "Invariants")
	fmt.Fprintf(w, "  %-7s %-78s %8s %9s\n", "", "invariant", "checked", "breaches")
	settled := "ok"
	if !r.Settled {
		settled = "BREACH"
	}
	fmt.Fprintf(w, "  %-7s %-78s %8s %9d\n", settled, "the pipeline settles after the faults stop (within "+r.Opts.Settle.String()+")", "-", b2i(!r.Settled))
	if !r.Settled {
		fmt.Fprintf(w, "          - still busy: %s\n", r.SettleState)
	}
	for _, c := range r.Verdict.Checks {
		mark := "ok"
		switch {
		case c.Info:
			mark = "note"
		case !c.OK():
			mark = "BREACH"
		}
		fmt.Fprintf(w, "  %-7s %-78s %8d %9d\n", mark, c.Name, c.Checked, c.Breaches)
		for _, e := range c.Examples {
			fmt.Fprintf(w, "          - %s\n", e)
		}
	}
}

func printRecoveries(w io.Writer, r *Result) {
	if len(r.Recoveries) == 0 {
		return
	}
	fmt.Fprintln(w, "\nRecovery paths exercised (from the services' logs)")
	for _, p := range r.Recoveries {
		fmt.Fprintf(w, "  %-80s %6d\n", p.What, p.Count)
	}
}
