package status

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed web
var web embed.FS

// asset is one embedded file, with the hash that busts caches.
type asset struct {
	body  []byte
	ctype string
	hash  string
}

func loadAssets() (map[string]asset, error) {
	out := map[string]asset{}
	err := fs.WalkDir(web, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".html") {
			return err
		}
		b, err := web.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		out[path.Base(p)] = asset{body: b, ctype: ctype, hash: hex.EncodeToString(sum[:8])}
		return nil
	})
	return out, err
}

// templates parses the page; now is the clock the elapsed times are counted on.
func templates(assets map[string]asset, now func() time.Time) (*template.Template, error) {
	funcs := template.FuncMap{
		"asset": func(name string) (string, error) {
			a, ok := assets[name]
			if !ok {
				return "", fmt.Errorf("no asset %s", name)
			}
			return "/static/" + name + "?v=" + a.hash, nil
		},
		"join":  func(s []string) string { return strings.Join(s, " ") },
		"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"clock": func(t time.Time) string { return t.UTC().Format("Jan 2 15:04:05") + " UTC" },
		"ms":    func(t time.Time) int64 { return t.UnixMilli() },
		"short": func(s string) string { return s[:min(len(s), 12)] },
		"dur":   func(sec float64) string { return formatSeconds(sec) },
		"elapsed": func(since time.Time) string {
			if since.IsZero() {
				return ""
			}
			return formatSeconds(now().Sub(since).Seconds())
		},
		"progress": func(since time.Time, est float64) int64 {
			return int64(min(max(now().Sub(since).Seconds(), 0), est))
		},
	}
	return template.New("status").Funcs(funcs).ParseFS(web, "web/*.html")
}

// formatSeconds is how the page writes a duration; status.js's fmt is the same.
func formatSeconds(sec float64) string {
	s := int64(max(sec, 0))
	h, m := s/3600, s%3600/60
	switch {
	case h > 0 && m == 0:
		return fmt.Sprintf("%dh", h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

func (s *Server) render(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := s.tpl.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", `"`+a.hash+`"`)
	if r.URL.Query().Get("v") == a.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	if r.Header.Get("If-None-Match") == `"`+a.hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeBody(w, r, a.ctype, a.body)
}
