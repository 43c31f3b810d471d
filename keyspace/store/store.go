package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Errors a caller acts on.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: Create found the key already there.
	ErrExists = errors.New("already exists")
	// ErrConflict: the key changed since it was read (compare on mod revision failed);
	// read again and retry, or report.
	ErrConflict = errors.New("changed concurrently")
)

// Store reads and writes meshfed records under one keyspace.
type Store struct {
	cli *clientv3.Client
	KS  records.Keyspace
	log *slog.Logger
}

// New wraps the process's client.
func New(cli *clientv3.Client, prefix string, log *slog.Logger) (*Store, error) {
	ks, err := records.NewKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{cli: cli, KS: ks, log: log}, nil
}

// Client is the underlying etcd client (for leases and auth management).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Item is a decoded record with its etcd revisions.
type Item[T any] struct {
	Key            string
	Value          *T
	CreateRevision int64
	ModRevision    int64
	Lease          int64
}

// Get reads and decodes one record; ErrNotFound when absent.
func Get[T any, PT interface {
	*T
	records.Record
}](ctx context.Context, s *Store, key string) (*Item[T], error) {
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if len(r.Kvs) == 0 {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	kv := r.Kvs[0]
	v, err := records.Decode[T, PT](kv.Value)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return &Item[T]{Key: key, Value: v, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease}, nil
}

// listPage bounds one range request: a list of 100k exports must not be one huge answer.
const listPage = 1000

// List reads every record under prefix at one consistent revision, in pages. Records that
// do not decode are skipped and returned as errors (one bad writer must not hide the rest).
func List[T any, PT interface {
	*T
	records.Record
}](ctx context.Context, s *Store, prefix string) (items []Item[T], rev int64, bad []error, err error) {
	err = s.scan(ctx, prefix, 0, func(key string, value []byte, create, mod, lease int64) {
		v, derr := records.Decode[T, PT](value)
		if derr != nil {
			bad = append(bad, fmt.Errorf("%s: %w", key, derr))
			return
		}
		items = append(items, Item[T]{Key: key, Value: v, CreateRevision: create, ModRevision: mod, Lease: lease})
	}, &rev)
	return items, rev, bad, err
}

// scan pages through prefix at one revision (0: the current one, which is stored in *rev).
func (s *Store) scan(ctx context.Context, prefix string, atRev int64, fn func(key string, value []byte, create, mod, lease int64), rev *int64) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if atRev != 0 {
			opts = append(opts, clientv3.WithRev(atRev))
		}
		r, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		if atRev == 0 {
			atRev = r.Header.Revision
			*rev = atRev
		}
		for _, kv := range r.Kvs {
			fn(string(kv.Key), kv.Value, kv.CreateRevision, kv.ModRevision, kv.Lease)
		}
		if !r.More || len(r.Kvs) == 0 {
			return nil
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// Create writes rec at key only if the key does not exist; ErrExists otherwise. It
// returns the new mod revision.
func (s *Store) Create(ctx context.Context, key string, rec records.Record, opts ...clientv3.OpOption) (int64, error) {
	b, err := records.Encode(rec)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	r, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), opts...)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("create %s: %w", key, ErrExists)
	}
	return r.Header.Revision, nil
}

// Update writes rec at key only if the key's mod revision is still modRev (the revision
// the caller read); ErrConflict otherwise.
func (s *Store) Update(ctx context.Context, key string, rec records.Record, modRev int64, opts ...clientv3.OpOption) (int64, error) {
	b, err := records.Encode(rec)
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	r, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(b), opts...)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("update %s: %w", key, ErrConflict)
	}
	return r.Header.Revision, nil
}

// Delete removes key if its mod revision is still modRev; ErrConflict otherwise. A key
// that is already gone is not an error.
func (s *Store) Delete(ctx context.Context, key string, modRev int64) error {
	r, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if !r.Succeeded && r.Responses[0].GetResponseRange().Count > 0 {
		return fmt.Errorf("delete %s: %w", key, ErrConflict)
	}
	return nil
}

// Modify reads the record at key, lets fn change it (or create it when absent: fn gets
// nil), and writes it back in a transaction that compares the mod revision, retrying on
// conflict up to 10 times. fn returns the record to write, or nil to write nothing.
func Modify[T any, PT interface {
	*T
	records.Record
}](ctx context.Context, s *Store, key string, fn func(cur *T) (*T, error), opts ...clientv3.OpOption) (*T, error) {
	for attempt := 0; attempt < 10; attempt++ {
		var cur *T
		var modRev int64
		it, err := Get[T, PT](ctx, s, key)
		switch {
		case err == nil:
			cur, modRev = it.Value, it.ModRevision
		case errors.Is(err, ErrNotFound):
		default:
			return nil, err
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return next, err
		}
		if cur == nil {
			_, err = s.Create(ctx, key, PT(next), opts...)
		} else {
			_, err = s.Update(ctx, key, PT(next), modRev, opts...)
		}
		if errors.Is(err, ErrExists) || errors.Is(err, ErrConflict) {
			continue
		}
		return next, err
	}
	return nil, fmt.Errorf("modify %s: %w ten times in a row; try again", key, ErrConflict)
}

// IsPermissionDenied reports whether etcd refused the request for lack of permission
// (etcd auth: a cluster's role writes only its own keys).
func IsPermissionDenied(err error) bool { return isPermissionDenied(err) }

func isPermissionDenied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || (err != nil && strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error()))
}
