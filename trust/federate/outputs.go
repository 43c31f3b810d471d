package federate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-multierror"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/trust"
)

// BundleMapFile is the SPIFFE bundle map's file name in the bundle directory and ConfigMap.
const BundleMapFile = bundlemap.FileName

// ConfigMapOutput writes the bundle files into one ConfigMap (keys <td>.pem and
// bundle-map.json), for pods that mount trust bundles.
type ConfigMapOutput struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
}

type outputs struct {
	s *Service
	// pemFiles are the <td>.pem files this process wrote, so that a trust domain that left
	// has its file removed (and nothing else in the directory is touched).
	pemFiles map[string]bool
}

func newOutputs(s *Service) *outputs { return &outputs{s: s, pemFiles: map[string]bool{}} }

// Files renders what goes into the bundle directory and the ConfigMap.
func Files(set *trust.Set) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, b := range set.Bundles() {
		files[b.TrustDomain.Name()+".pem"] = b.RootsPEM()
	}
	bm, err := set.BundleMapJSON()
	if err != nil {
		return nil, err
	}
	files[BundleMapFile] = append(bm, '\n')
	return files, nil
}

// write applies set to every output; the first failure stops and is returned (the caller
// retries the whole set later).
func (o *outputs) write(ctx context.Context, set *trust.Set, subs []func(*trust.Set) error) error {
	files, err := Files(set)
	if err != nil {
		return err
	}
	errs := validate.NewList()
	if dir := o.s.cfg.BundleDir; dir != "" {
		if err := o.writeDir(dir, files); err != nil {
			o.s.m.outputErrors.WithLabelValues("files").Inc()
			errs = multierror.Append(errs, fmt.Errorf("bundle dir %s: %w", dir, err))
		}
	}
	if cm := o.s.cfg.ConfigMap; cm != nil {
		if err := cm.apply(ctx, files); err != nil {
			o.s.m.outputErrors.WithLabelValues("configmap").Inc()
			errs = multierror.Append(errs, fmt.Errorf("configmap %s/%s: %w", cm.Namespace, cm.Name, err))
		}
	}
	if o.s.ep != nil {
		o.s.ep.set(set)
	}
	for _, f := range subs {
		if err := f(set); err != nil {
			o.s.m.outputErrors.WithLabelValues("subscriber").Inc()
			errs = multierror.Append(errs, fmt.Errorf("subscriber: %w", err))
		}
	}
	return errs.ErrorOrNil()
}

// writeDir writes every file atomically (temp file + rename): the bundle map last, so a
// reader that sees a new map also finds the new PEM files.
func (o *outputs) writeDir(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		if name == BundleMapFile {
			continue
		}
		if err := writeIfChanged(filepath.Join(dir, name), data); err != nil {
			return err
		}
		o.pemFiles[name] = true
	}
	if err := writeIfChanged(filepath.Join(dir, BundleMapFile), files[BundleMapFile]); err != nil {
		return err
	}
	for name := range o.pemFiles {
		if _, ok := files[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
				return err
			}
			delete(o.pemFiles, name)
		}
	}
	return nil
}

// writeIfChanged skips identical content, so file watchers (grpc-go's, Envoy's) are not
// woken for nothing.
func writeIfChanged(path string, data []byte) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(data) {
		return nil
	}
	return atomicfile.Write(path, data, 0o644)
}

// managedLabel marks the ConfigMap as meshfed's.
const managedLabel = "app.kubernetes.io/managed-by"

func (c *ConfigMapOutput) apply(ctx context.Context, files map[string][]byte) error {
	data := make(map[string]string, len(files))
	for k, v := range files {
		data[k] = string(v)
	}
	api := c.Client.CoreV1().ConfigMaps(c.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := api.Get(ctx, c.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm := &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: c.Name, Namespace: c.Namespace, Labels: map[string]string{managedLabel: "meshfed"}},
				Data:       data,
			}
			_, err = api.Create(ctx, cm, metav1.CreateOptions{FieldManager: "meshfed-trust"})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		if equalData(cur.Data, data) {
			return nil
		}
		next := cur.DeepCopy()
		next.Data = data
		if next.Labels == nil {
			next.Labels = map[string]string{}
		}
		next.Labels[managedLabel] = "meshfed"
		// Update carries the resourceVersion read: a concurrent writer makes it fail with a
		// conflict, and we read again.
		_, err = api.Update(ctx, next, metav1.UpdateOptions{FieldManager: "meshfed-trust"})
		if apierrors.IsConflict(err) {
			continue
		}
		return err
	}
	return errors.New("conflicting updates five times in a row")
}

func equalData(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ParseConfigMapRef splits NAMESPACE/NAME.
func ParseConfigMapRef(ref string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
		return "", "", &validate.FieldError{Field: FieldConfigMap, Msg: fmt.Sprintf("%q: give NAMESPACE/NAME", ref)}
	}
	return ns, n, nil
}
