package jenkinssim

import (
	"errors"
	"strconv"
	"strings"
)

// treeNode is a parsed Jenkins ?tree= expression, e.g.
// "builds[number,url,actions[parameters[name,value]]]{0,10}".
type treeNode struct {
	fields map[string]*treeField
}

type treeField struct {
	sub    *treeNode // nil: the whole value
	lo, hi int       // range {lo,hi}; hi < 0 means open
	ranged bool
}

func (t *treeNode) wants(name string) bool {
	_, ok := t.fields[name]
	return ok
}

func parseTree(s string) (*treeNode, error) {
	p := &treeParser{s: s}
	n, err := p.list()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, errors.New("unexpected " + strconv.Quote(p.s[p.i:]))
	}
	return n, nil
}

type treeParser struct {
	s string
	i int
}

func (p *treeParser) list() (*treeNode, error) {
	n := &treeNode{fields: map[string]*treeField{}}
	for {
		start := p.i
		for p.i < len(p.s) && !strings.ContainsRune("[]{},", rune(p.s[p.i])) {
			p.i++
		}
		name := strings.TrimSpace(p.s[start:p.i])
		if name == "" {
			return nil, errors.New("empty field name at " + strconv.Itoa(start))
		}
		f := &treeField{hi: -1}
		if p.peek('[') {
			p.i++
			sub, err := p.list()
			if err != nil {
				return nil, err
			}
			if !p.peek(']') {
				return nil, errors.New("missing ]")
			}
			p.i++
			f.sub = sub
		}
		if p.peek('{') {
			end := strings.IndexByte(p.s[p.i:], '}')
			if end < 0 {
				return nil, errors.New("missing }")
			}
			if err := f.parseRange(p.s[p.i+1 : p.i+end]); err != nil {
				return nil, err
			}
			p.i += end + 1
		}
		n.fields[name] = f
		if !p.peek(',') {
			return n, nil
		}
		p.i++
	}
}

func (p *treeParser) peek(c byte) bool { return p.i < len(p.s) && p.s[p.i] == c }

// parseRange reads "M,N", "M,", ",N" or "N" (just the N-th element).
func (f *treeField) parseRange(r string) error {
	f.ranged = true
	lo, hi, comma := strings.Cut(r, ",")
	var err error
	if lo != "" {
		if f.lo, err = strconv.Atoi(lo); err != nil {
			return err
		}
	}
	switch {
	case !comma:
		f.hi = f.lo + 1
	case hi != "":
		if f.hi, err = strconv.Atoi(hi); err != nil {
			return err
		}
	}
	return nil
}

// apply keeps the fields the tree asks for (and _class, as Jenkins does).
func (t *treeNode) apply(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		if c, ok := v["_class"]; ok {
			out["_class"] = c
		}
		for name, f := range t.fields {
			val, ok := v[name]
			if !ok {
				continue
			}
			if list, ok := val.([]any); ok && f.ranged {
				lo, hi := min(f.lo, len(list)), len(list)
				if f.hi >= 0 {
					hi = min(f.hi, len(list))
				}
				val = list[lo:max(lo, hi)]
			}
			if f.sub != nil {
				val = f.sub.apply(val)
			}
			out[name] = val
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = t.apply(e)
		}
		return out
	}
	return v
}
