package timeline

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// Series is one line of the chart: requests served by one cluster per bucket.
type Series struct {
	Name   string
	Values []int
}

// Mark is a vertical line at a moment (cordon, lift).
type Mark struct {
	AtMs  int64
	Label string
}

// Chart is what the page shows.
type Chart struct {
	Title    string
	BucketMs int64
	Series   []Series
	Errors   []int
	Marks    []Mark
	// Summary lines are shown above the chart, Facts as a two-column table below it.
	Summary []string
	Facts   [][2]string
}

var palette = []string{"#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"}

const (
	width, height          = 960.0, 340.0
	left, right, top, foot = 56.0, 150.0, 20.0, 40.0
)

// SVG renders the chart alone.
func SVG(c Chart) template.HTML {
	n := len(c.Errors)
	for _, s := range c.Series {
		if len(s.Values) > n {
			n = len(s.Values)
		}
	}
	maxV := 1
	for _, s := range c.Series {
		for _, v := range s.Values {
			maxV = max(maxV, v)
		}
	}
	for _, v := range c.Errors {
		maxV = max(maxV, v)
	}
	pw, ph := width-left-right, height-top-foot
	x := func(i float64) float64 {
		if n <= 1 {
			return left
		}
		return left + pw*i/float64(n-1)
	}
	y := func(v int) float64 { return top + ph - ph*float64(v)/float64(maxV) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`, width, height, width, height)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, left, top, pw, ph)
	// y grid: 4 lines.
	for i := 0; i <= 4; i++ {
		v := maxV * i / 4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/><text x="%.1f" y="%.1f" text-anchor="end">%d</text>`,
			left, y(v), left+pw, y(v), left-6, y(v)+4, v)
	}
	// x axis: seconds.
	totalMs := int64(n) * c.BucketMs
	step := int64(1000)
	for totalMs/step > 12 {
		step *= 2
	}
	for ms := int64(0); ms <= totalMs && c.BucketMs > 0; ms += step {
		xi := x(float64(ms) / float64(c.BucketMs))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%ds</text>`, xi, top+ph+16, ms/1000)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">time since start (requests per %d ms bucket)</text>`, left+pw/2, height-4, c.BucketMs)
	// errors as bars.
	bw := pw / float64(max(n, 1))
	for i, v := range c.Errors {
		if v > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d62728" opacity="0.6"><title>%d errors</title></rect>`,
				x(float64(i))-bw/2, y(v), bw, top+ph-y(v), v)
		}
	}
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		var pts []string
		for i, v := range s.Values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(i)), y(v)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, strings.Join(pts, " "))
		ly := top + 16 + float64(si)*18
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/><text x="%.1f" y="%.1f">%s</text>`,
			left+pw+12, ly-4, left+pw+32, ly-4, col, left+pw+38, ly, template.HTMLEscapeString(s.Name))
	}
	ly := top + 16 + float64(len(c.Series))*18
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="20" height="8" fill="#d62728" opacity="0.6"/><text x="%.1f" y="%.1f">errors</text>`, left+pw+12, ly-8, left+pw+38, ly)
	for _, m := range c.Marks {
		if c.BucketMs <= 0 {
			break
		}
		xm := x(float64(m.AtMs) / float64(c.BucketMs))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="4 3"/><text x="%.1f" y="%.1f">%s</text>`,
			xm, top, xm, top+ph, xm+3, top+12, template.HTMLEscapeString(m.Label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built above from numbers and escaped names
}

var page = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}td{padding:2px 12px 2px 0;vertical-align:top}td:first-child{color:#555}</style>
</head><body>
<h1>{{.Title}}</h1>
{{range .Summary}}<p>{{.}}</p>
{{end}}
{{.SVG}}
<table>
{{range .Facts}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>
{{end}}</table>
</body></html>
`))

// WriteHTML writes the page.
func WriteHTML(w io.Writer, c Chart) error {
	return page.Execute(w, struct {
		Chart
		SVG template.HTML
	}{c, SVG(c)})
}
