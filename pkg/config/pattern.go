package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern matches a Gerrit name (project, branch, topic, file path) written as
// in the Gerrit Trigger plugin: a plain name matches itself, "glob:" takes a
// path glob ("*" within one segment, "**" across segments, "?" one character)
// and "regex:" a Go regular expression that must match the whole name.
type Pattern struct {
	src string
	re  *regexp.Regexp // nil for a plain name
}

// CompilePattern parses one pattern.
func CompilePattern(p string) (Pattern, error) {
	switch {
	case p == "":
		return Pattern{}, fmt.Errorf("empty pattern")
	case strings.HasPrefix(p, "regex:"):
		re, err := regexp.Compile(`^(?:` + strings.TrimPrefix(p, "regex:") + `)$`)
		if err != nil {
			return Pattern{}, fmt.Errorf("pattern %q: %w", p, err)
		}
		return Pattern{src: p, re: re}, nil
	case strings.HasPrefix(p, "glob:"):
		g := strings.TrimPrefix(p, "glob:")
		if g == "" {
			return Pattern{}, fmt.Errorf("pattern %q: empty glob", p)
		}
		return Pattern{src: p, re: regexp.MustCompile(globRegexp(g))}, nil
	}
	return Pattern{src: p}, nil
}

func globRegexp(g string) string {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		switch c := g[i]; {
		case c == '*' && i+1 < len(g) && g[i+1] == '*':
			i++
			if i+1 < len(g) && g[i+1] == '/' { // "**/" also matches no directory at all
				i++
				b.WriteString(`(?:.*/)?`)
			} else {
				b.WriteString(`.*`)
			}
		case c == '*':
			b.WriteString(`[^/]*`)
		case c == '?':
			b.WriteString(`[^/]`)
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return b.String()
}

// Match reports whether name matches.
func (p Pattern) Match(name string) bool {
	if p.re == nil {
		return p.src == name
	}
	return p.re.MatchString(name)
}

func (p Pattern) String() string { return p.src }

// Patterns is a list of patterns; it matches a name when any pattern does.
type Patterns []Pattern

// CompilePatterns compiles a validated list (Validate has checked every entry).
func CompilePatterns(list []string) (Patterns, error) {
	ps := make(Patterns, 0, len(list))
	for _, s := range list {
		p, err := CompilePattern(s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Match reports whether any pattern matches name.
func (ps Patterns) Match(name string) bool {
	for _, p := range ps {
		if p.Match(name) {
			return true
		}
	}
	return false
}
