package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// --autogroup-nice (BENCHMARKS.md, "Session 11: what the slow runs wait
// for"). With the kernel's autogroups on (/proc/sys/kernel/
// sched_autogroup_enabled 1, as on this machine), the scheduler first
// shares the cores between autogroups, one per session (setsid), each with
// the weight of its own nice (0 unless set through /proc/PID/autogroup),
// and only then between the tasks of a group by their nice. A `nice -n 15`
// build in another session then weighs as much as the whole benchmark
// (sched(7), "The autogroup feature"): the guide's convention, niced work
// yields to the timed measurement, does not hold across sessions. The tool
// can set the nice of its own autogroup, which the servers it starts share
// (they inherit its session); run it under setsid so that the group is the
// benchmark's alone. The previous value is restored at the end.

// autogroupPath is this process's autogroup file (proc(5)).
const autogroupPath = "/proc/self/autogroup"

// autogroupsOn tells whether the kernel's autogroups are on.
func autogroupsOn() bool {
	b, err := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// parseAutogroup reads a /proc/PID/autogroup line: "/autogroup-1189 nice 0".
func parseAutogroup(s string) (name string, nice int, err error) {
	f := strings.Fields(s)
	if len(f) != 3 || f[1] != "nice" || !strings.HasPrefix(f[0], "/autogroup-") {
		return "", 0, fmt.Errorf("%s: unexpected %q", autogroupPath, strings.TrimSpace(s))
	}
	if nice, err = strconv.Atoi(f[2]); err != nil {
		return "", 0, fmt.Errorf("%s: unexpected %q", autogroupPath, strings.TrimSpace(s))
	}
	return f[0], nice, nil
}

// parseAutogroupNice reads --autogroup-nice: nil when not given ("").
func parseAutogroupNice(s string) (*int, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("--autogroup-nice: %q is not a number", s)
	}
	if err := checkNice(n); err != nil {
		return nil, err
	}
	return &n, nil
}

// checkNice checks a nice value of --autogroup-nice.
func checkNice(n int) error {
	if n < -20 || n > 19 {
		return fmt.Errorf("--autogroup-nice: %d is not between -20 and 19", n)
	}
	return nil
}

// setAutogroupNice sets the nice of this process's autogroup (and so of
// the servers started after it) and returns the group's name, its nice
// before, and a func that puts it back.
func setAutogroupNice(n int) (name string, before int, restore func(), err error) {
	b, err := os.ReadFile(autogroupPath)
	if err != nil {
		return "", 0, nil, fmt.Errorf("--autogroup-nice: %w (the kernel's autogroups are off or absent)", err)
	}
	if name, before, err = parseAutogroup(string(b)); err != nil {
		return "", 0, nil, err
	}
	if err := os.WriteFile(autogroupPath, []byte(strconv.Itoa(n)), 0); err != nil {
		return "", 0, nil, fmt.Errorf("--autogroup-nice %d: %w", n, err)
	}
	return name, before, func() { _ = os.WriteFile(autogroupPath, []byte(strconv.Itoa(before)), 0) }, nil
}
