package ctxtime

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, time.Millisecond) || !Sleep(ctx, 0) {
		t.Fatal("Sleep with a live context reported an end")
	}
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) || Sleep(ctx, 0) {
		t.Fatal("Sleep with an ended context reported a whole wait")
	}
	if time.Since(start) > time.Minute {
		t.Fatal("Sleep did not return when the context ended")
	}
}
