package timeline

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteHTML(t *testing.T) {
	for _, c := range []Chart{
		{Title: "empty"},
		{Title: "a <b> & c", BucketMs: 500, Series: []Series{{Name: "west<script>", Values: []int{3, 4, 0}}, {Name: "north", Values: []int{0, 0, 4}}},
			Errors: []int{0, 2, 0}, Marks: []Mark{{AtMs: 500, Label: "cordon west"}}, Summary: []string{"s1"}, Facts: [][2]string{{"k", "v"}}},
	} {
		var b bytes.Buffer
		if err := WriteHTML(&b, c); err != nil {
			t.Fatal(err)
		}
		h := b.String()
		if !strings.Contains(h, "<svg") || !strings.Contains(h, "</html>") || strings.Contains(h, "<script>") {
			t.Fatalf("page:\n%s", h)
		}
		if len(c.Series) > 0 && (!strings.Contains(h, "polyline") || !strings.Contains(h, "cordon west") || !strings.Contains(h, "2 errors")) {
			t.Fatalf("page lacks series, mark or errors:\n%s", h)
		}
	}
}
