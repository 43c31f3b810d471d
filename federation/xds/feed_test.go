package xds

import (
	"slices"
	"testing"

	"github.com/meshfed/meshfed/keyspace/view"
)

func TestFeed(t *testing.T) {
	f := NewFeed()
	take := func() *view.View {
		t.Helper()
		select {
		case v := <-f.C():
			return v
		default:
			t.Fatal("feed empty")
			return nil
		}
	}
	f.Send(nil)
	f.Send(&view.View{}) // revision 0: not synced, never planned
	select {
	case v := <-f.C():
		t.Fatalf("got %+v", v)
	default:
	}

	// Views replaced before being taken carry their change lists along.
	f.Send(&view.View{Revision: 2, Changed: []string{"a/x"}})
	f.Send(&view.View{Revision: 3, Changed: []string{"a/y"}})
	v := take()
	if v.Revision != 3 || !slices.Equal(v.Changed, []string{"a/x", "a/y"}) {
		t.Fatalf("merged view %+v", v)
	}
	// An unknown change list makes the merge unknown.
	f.Send(&view.View{Revision: 4})
	f.Send(&view.View{Revision: 5, Changed: []string{"a/z"}})
	if v := take(); v.Revision != 5 || v.Changed != nil {
		t.Fatalf("merge with an unknown list: %+v", v)
	}
	// An older view (a seed racing the callback) is dropped; an equal one is not (local
	// exports change without an etcd revision).
	f.Send(&view.View{Revision: 4, Changed: []string{"old"}})
	select {
	case v := <-f.C():
		t.Fatalf("older view delivered: %+v", v)
	default:
	}
	f.Send(&view.View{Revision: 5, Changed: []string{"b/w"}})
	if v := take(); !slices.Equal(v.Changed, []string{"b/w"}) {
		t.Fatalf("equal revision: %+v", v)
	}
}

// TestChangedList: with a change list the server looks only at the listed services (an
// unlisted change is, by contract, not there), and still filters listed non-changes.
func TestChangedList(t *testing.T) {
	s := benchServer(t)
	v := scaleView(50, 3, 2)
	s.replan(benchT0, s.onView(v))
	nv := *v
	nv.Revision = 2
	nv.Services = map[string]*view.Service{}
	for k, sv := range v.Services {
		nv.Services[k] = sv
	}
	nv.Services["ns7/svc7"] = scaleService(7, 3, 2, 2)
	nv.Services["ns8/svc8"] = scaleService(8, 3, 2, 2)
	nv.Changed = []string{"ns7/svc7", "ns9/svc9"}
	keys := s.onView(&nv)
	if len(keys) != 1 || !keys["ns7/svc7"] {
		t.Fatalf("keys %v: want only the listed service that changed", keys)
	}
	nv2 := nv
	nv2.Revision, nv2.Changed = 3, nil
	s.view = v
	if keys := s.onView(&nv2); len(keys) != 2 {
		t.Fatalf("without a list every service is compared: %v", keys)
	}
}
