// Package timeline renders a drill's requests per cluster over time as a self-contained
// HTML page with an inline SVG chart (no scripts, no external resources), so a person can
// open the report file anywhere.
package timeline
