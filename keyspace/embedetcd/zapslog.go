package embedetcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore sends etcd's zap logs to slog, so an embedded etcd logs like the rest of
// meshfed. Once the server is closing, its complaints about closed listeners are noise:
// they are demoted to debug.
type slogCore struct {
	log     *slog.Logger
	min     zapcore.Level
	closing *atomic.Bool
	fields  []slog.Attr
}

func newZapLogger(log *slog.Logger, min zapcore.Level, closing *atomic.Bool) *zap.Logger {
	return zap.New(&slogCore{log: log.With("part", "etcd"), min: min, closing: closing})
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	n := *c
	n.fields = append(append([]slog.Attr(nil), c.fields...), attrs(fs)...)
	return &n
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	lvl := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		lvl = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lvl = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		lvl = slog.LevelDebug
	}
	if c.closing.Load() {
		lvl = slog.LevelDebug
	}
	as := append(append([]slog.Attr(nil), c.fields...), attrs(fs)...)
	c.log.LogAttrs(context.Background(), lvl, e.Message, as...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func attrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, slog.Any(k, v))
	}
	return out
}
