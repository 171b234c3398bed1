package promtest

import (
	"regexp"
	"strings"
)

var (
	reString  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	reBraces  = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	reGroup   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reIdent   = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	reNumber  = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b`)
	reDur     = regexp.MustCompile(`\b\d+(?:ms|s|m|h|d|w|y)\b`)
	promWords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true, "atan2": true}
)

// MetricNames returns the metric names a PromQL expression reads: its identifiers that are
// neither functions nor aggregations (followed by "("), keywords, label names (inside {}, by(),
// on() ...) nor numbers. Grafana's $variables must be replaced first.
func MetricNames(expr string) []string {
	s := reString.ReplaceAllString(expr, `""`)
	for {
		n := reBraces.ReplaceAllString(s, " ")
		if n == s {
			break
		}
		s = n
	}
	s = reGroup.ReplaceAllString(s, " ")
	s = reDur.ReplaceAllString(s, " ")
	s = reNumber.ReplaceAllString(s, " ")
	var out []string
	seen := map[string]bool{}
	for _, loc := range reIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if promWords[id] || strings.HasPrefix(rest, "(") || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}
