package reloadfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestReloadsOnChangeKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "v")
	write := func(s string, mod time.Time) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write("1", t0)
	loads := 0
	var reloads []error
	f, err := New(func() (int, error) {
		loads++
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(string(b))
	}, Options{CheckInterval: time.Nanosecond, OnReload: func(err error) { reloads = append(reloads, err) }}, p)
	if err != nil {
		t.Fatal(err)
	}
	get := func() int {
		v, err := f.Get()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if get() != 1 || get() != 1 || loads != 1 {
		t.Fatalf("unchanged file loaded %d times", loads)
	}
	write("22", t0.Add(time.Second))
	if v := get(); v != 22 || len(reloads) != 1 || reloads[0] != nil {
		t.Fatalf("after a change: %d, reloads %v", v, reloads)
	}
	write("bad", t0.Add(2*time.Second))
	if v := get(); v != 22 || len(reloads) != 2 || reloads[1] == nil {
		t.Fatalf("a bad file must keep the last good value: %d, reloads %v", v, reloads)
	}
	os.Remove(p)
	if v := get(); v != 22 {
		t.Fatalf("a missing file must keep the last good value: %d", v)
	}
	write("3", t0.Add(3*time.Second))
	if v := get(); v != 3 {
		t.Fatalf("the fixed file is not loaded: %d", v)
	}
}

func TestFirstLoadMustSucceed(t *testing.T) {
	_, err := New(func() (int, error) { return 0, errors.New("no") }, Options{}, filepath.Join(t.TempDir(), "missing"))
	if err == nil {
		t.Fatal("a missing file at start must fail")
	}
	if _, err := KeyPair("/nonexistent/cert.pem", "/nonexistent/key.pem", Options{}); err == nil {
		t.Fatal("KeyPair of missing files must fail")
	}
}
