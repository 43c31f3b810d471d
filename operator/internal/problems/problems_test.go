package problems

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

// TestInvalidFormat: one problem is "what: problem", several a list (the format the
// multierror-based list had before fields replaced flags); errors.As finds the
// *multierror.Error (formatted the same) and each Problem; Rename names fields and Refs.
func TestInvalidFormat(t *testing.T) {
	p := New("join east")
	if p.Err() != nil || p.Len() != 0 {
		t.Fatalf("empty list: %v", p.Err())
	}
	p.Add("Cluster", "taken: add %s", Ref("Force"))
	if got := p.Err().Error(); got != "join east: Cluster: taken: add Force" {
		t.Errorf("one: %q", got)
	}
	p.Add("", "no field")
	p.Add("From/Target", "give both")
	err := p.Err()
	want := "join east: 3 problems:\n  - Cluster: taken: add Force\n  - no field\n  - From/Target: give both"
	if got := err.Error(); got != want {
		t.Errorf("several: %q, want %q", got, want)
	}
	var me *multierror.Error
	if !errors.As(err, &me) || len(me.Errors) != 3 || me.Error() != want {
		t.Errorf("as *multierror.Error: %v", me)
	}
	var ie *Invalid
	if !errors.As(err, &ie) || len(ie.List()) != 3 || ie.List()[2].Field != "From/Target" {
		t.Fatalf("as *Invalid: %v", err)
	}
	flags := map[string]string{"Cluster": "--cluster", "Force": "--force", "From": "--from", "Target": "--target"}
	r := ie.Rename(func(f string) string {
		if fl, ok := flags[f]; ok {
			return fl
		}
		return f
	})
	want = "join east: 3 problems:\n  - --cluster: taken: add --force\n  - no field\n  - --from/--target: give both"
	if got := r.Error(); got != want {
		t.Errorf("renamed: %q, want %q", got, want)
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("Rename changed the original: %v", err)
	}
}
