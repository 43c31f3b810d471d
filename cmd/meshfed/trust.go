package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/expiry"
	"github.com/meshfed/meshfed/trust/rotation"
)

func init() { register(newTrustCmd) }

func newTrustCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "SPIFFE trust: development CA, root rotation jobs, bundle status",
		Long: `Trust bundles are synced by the federation service (flags --trust-domain, --bundle-source,
--bundle-dir, --bundle-endpoint of 'meshfed federation'). These commands manage the rest:

  dev-ca   the development CA: a root per trust domain, X509-SVIDs for demos
  rotate   rotate a trust domain's root without an outage (a resumable job in etcd)
  status   bundles, acks per cluster, rotation jobs, roots close to expiry

See docs/trust.md.`,
	}
	cmd.AddCommand(newDevCACmd(), newRotateCmd(), newTrustStatusCmd())
	return cmd
}

func newDevCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev-ca",
		Short: "Development CA: make roots and issue X509-SVIDs (demos only: keys are plain files)",
	}
	var dir string
	var tds []string
	var svidTTL, validity time.Duration
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a root per trust domain (idempotent: an existing CA is kept)",
		Example: `  meshfed trust dev-ca init --trust-domain east.example --trust-domain west.example
  meshfed trust dev-ca init --dir /var/lib/meshfed/ca --trust-domain east.example --svid-ttl 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cas, err := devca.InitAll(dir, tds, devca.Options{SVIDTTL: svidTTL, RootValidity: validity})
			for _, ca := range cas {
				root, err := ca.Issuer()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: root %s expires %s (%s)\n", ca.TrustDomain().Name(), trust.Fingerprint(root), root.NotAfter.UTC().Format(time.RFC3339), ca.Dir())
			}
			return flagErr(err, map[string]string{devca.FieldTrustDomain: "--trust-domain", devca.FieldSVIDTTL: "--svid-ttl", devca.FieldRootValidity: "--root-validity"})
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", defaultDevCADir, "CA directory (one subdirectory per trust domain)")
	initCmd.Flags().StringSliceVar(&tds, "trust-domain", nil, "trust domain (repeat or comma-separate)")
	initCmd.Flags().DurationVar(&svidTTL, "svid-ttl", devca.DefaultSVIDTTL, "lifetime of issued SVIDs (also the drain wait of a rotation)")
	initCmd.Flags().DurationVar(&validity, "root-validity", devca.DefaultRootValidity, "validity of the root")

	var td, id, certOut, keyOut, bundleOut string
	var dns []string
	var ttl time.Duration
	issueCmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue an X509-SVID (certificate and key files, and the trust domain's roots)",
		Example: `  meshfed trust dev-ca issue --trust-domain east.example --spiffe-id spiffe://east.example/ns/shop/sa/cart \
    --cert cart.pem --key cart-key.pem --bundle east-roots.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svid, err := devca.IssueFiles(devca.IssueFilesRequest{Dir: dir, TrustDomain: td, IssueRequest: devca.IssueRequest{ID: id, DNSNames: dns, TTL: ttl},
				Cert: certOut, Key: keyOut, Bundle: bundleOut})
			if err != nil {
				return flagErr(err, map[string]string{devca.FieldTrustDomain: "--trust-domain", devca.FieldSPIFFEID: "--spiffe-id", devca.FieldFiles: "--cert/--key"})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s, expires %s\n", id, svid.Chain[0].NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	fl := issueCmd.Flags()
	fl.StringVar(&dir, "dir", defaultDevCADir, "CA directory")
	fl.StringVar(&td, "trust-domain", "", "trust domain of the CA")
	fl.StringVar(&id, "spiffe-id", "", "SPIFFE ID of the workload or gateway")
	fl.StringSliceVar(&dns, "dns", nil, "DNS SANs to add")
	fl.DurationVar(&ttl, "ttl", 0, "lifetime (default and maximum: the CA's --svid-ttl)")
	fl.StringVar(&certOut, "cert", "", "certificate output (PEM)")
	fl.StringVar(&keyOut, "key", "", "key output (PEM, mode 0600)")
	fl.StringVar(&bundleOut, "bundle", "", "also write the trust domain's roots here (PEM)")

	var rootTD, rootCert, rootKey string
	var rootValidity time.Duration
	newRootCmd := &cobra.Command{
		Use:     "new-root",
		Short:   "Make a new root certificate and key for a rotation (meshfed trust rotate --new-ca/--new-ca-key)",
		Example: `  meshfed trust dev-ca new-root --trust-domain east.example --cert new-root.pem --key new-root-key.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := devca.NewRootFiles(rootTD, rootValidity, rootCert, rootKey)
			if err != nil {
				return flagErr(err, map[string]string{devca.FieldFiles: "--cert/--key"})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new root %s for %s, expires %s\n", trust.Fingerprint(c), rootTD, c.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	newRootCmd.Flags().StringVar(&rootTD, "trust-domain", "", "trust domain")
	newRootCmd.Flags().StringVar(&rootCert, "cert", "", "certificate output (PEM)")
	newRootCmd.Flags().StringVar(&rootKey, "key", "", "key output (PEM, mode 0600)")
	newRootCmd.Flags().DurationVar(&rootValidity, "validity", devca.DefaultRootValidity, "validity")
	cmd.AddCommand(initCmd, issueCmd, newRootCmd)
	return cmd
}

type rotateFlags struct {
	etcd         etcdFlags
	td           string
	newCA        string
	newCAKey     string
	devCADir     string
	resume       bool
	abort        bool
	confirm      bool
	exclude      []string
	svidLifetime time.Duration
	minValidity  time.Duration
	gateTimeout  time.Duration
	istiodSettle time.Duration
	poll         time.Duration
}

// Exit codes of `meshfed trust rotate` a schedule can tell apart.
const (
	exitRotateBlocked = 3 // a gate timed out: the job waits in etcd, the next run resumes it
)

func newRotateCmd() *cobra.Command {
	var f rotateFlags
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate a trust domain's root without an outage (resumable job stored in etcd)",
		Long: `Rotate moves a trust domain from its current roots to --new-ca:

  preflight       new root valid past the job's end; every cluster acked the current bundle
  wait-acks-both  old+new roots published (sequence+1, bundle locked): every cluster acks
  switch-issuer   issuance moves to the new root (the dev CA switches itself; an external
                  issuer pauses until --confirm-issuer-switched)
  drain           waits the longest SVID lifetime: no SVID of the old root is left
  wait-acks-new   new root alone published (sequence+1): every cluster acks; lock released

Every step is an etcd transaction; a killed job resumes with --resume (or by running the
same command again). A member without heartbeat blocks the gates and is named; --exclude
CLUSTER (recorded in the job) lets the job go on without it. In a cluster whose federation
serves istiod (--istio-mcp-listen), a gate also waits until every istiod connected to it
gives its proxies the sequence's roots (PCDS), then --istiod-settle. --abort works until the old
root is removed and goes forward only (the old roots come back as a new sequence).

Exit status: 0 done (or nothing to do), 3 a gate timed out (--gate-timeout; the job waits
in etcd), 1 any other error.

` + etcdFlagsHelp + `

Examples:
  # Dev CA: make a root and rotate to it
  meshfed trust dev-ca new-root --trust-domain east.example --cert new.pem --key new-key.pem
  meshfed trust rotate --trust-domain east.example --new-ca new.pem --new-ca-key new-key.pem

  # External issuer (e.g. SPIRE's UpstreamAuthority): the job pauses at the switch
  meshfed trust rotate --trust-domain east.example --new-ca new-upstream.pem
  meshfed trust rotate --trust-domain east.example --confirm-issuer-switched

  # A crashed job; a cluster that is gone for good
  meshfed trust rotate --trust-domain east.example --resume --exclude west

See docs/trust.md ("Rotation").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRotate(cmd.Context(), cmd.OutOrStdout(), &f) },
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringVar(&f.td, "trust-domain", "", "trust domain to rotate")
	fl.StringVar(&f.newCA, "new-ca", "", "new root certificate (PEM)")
	fl.StringVar(&f.newCAKey, "new-ca-key", "", "key of --new-ca, only when meshfed's dev CA issues the SVIDs")
	fl.StringVar(&f.devCADir, "dev-ca-dir", defaultDevCADir, "development CA directory (with --new-ca-key)")
	fl.BoolVar(&f.resume, "resume", false, "resume the trust domain's job from its recorded phase")
	fl.BoolVar(&f.abort, "abort", false, "abort the job (only before the old root is removed; forward-only)")
	fl.BoolVar(&f.confirm, "confirm-issuer-switched", false, "confirm that the external issuer now signs with the new root (or, during an abort, with the old one)")
	fl.StringSliceVar(&f.exclude, "exclude", nil, "cluster that does not count at the gates (recorded in the job; repeatable)")
	fl.DurationVar(&f.svidLifetime, "svid-lifetime", 0, "longest SVID lifetime in the trust domain: the drain wait (default: the dev CA's SVID TTL, else 1h)")
	fl.DurationVar(&f.minValidity, "min-validity", 30*24*time.Hour, "the new root must stay valid this long after the job's expected end")
	fl.DurationVar(&f.gateTimeout, "gate-timeout", 0, "give up waiting at one gate after this long (exit 3; the job stays and resumes later); 0 waits forever")
	fl.DurationVar(&f.poll, "poll-interval", time.Second, "how often gates are checked")
	fl.DurationVar(&f.istiodSettle, "istiod-settle", rotation.DefaultIstiodSettle, "in a cluster that feeds istiod, wait this long after every istiod gives its proxies a sequence's roots (istiod's push to its proxies; 0: no wait)")
	return cmd
}

func (f *rotateFlags) validate() error {
	var errs validate.Errors
	if _, err := trust.ParseTrustDomain(f.td); err != nil {
		errs.Add("--trust-domain", "%v", err)
	}
	if f.istiodSettle < 0 {
		errs.Add("--istiod-settle", "must not be negative (0: no settle window)")
	}
	modes := 0
	for _, b := range []bool{f.resume, f.abort, f.confirm} {
		if b {
			modes++
		}
	}
	if modes > 1 {
		errs.Add("--resume/--abort/--confirm-issuer-switched", "give at most one")
	}
	if modes == 0 && f.newCA == "" {
		errs.Add("--new-ca", "give the new root (PEM), or --resume, --abort or --confirm-issuer-switched for an existing job")
	}
	if f.newCAKey != "" && f.newCA == "" {
		errs.Add("--new-ca-key", "goes with --new-ca")
	}
	if f.poll < 10*time.Millisecond {
		errs.Add("--poll-interval", "at least 10ms")
	}
	for _, c := range f.exclude {
		if err := validate.DNSLabel(c); err != nil {
			errs.Add("--exclude", "%v", err)
		}
	}
	errs.AddErr("", f.etcd.validate())
	return errs.Err()
}

// rotateFlagOf names the flag of each rotation.Config field that the rotation's errors
// name (and of Resume and Abort, the entry points).
var rotateFlagOf = map[string]string{
	"TrustDomain": "--trust-domain",
	"NewCA":       "--new-ca",
	"NewCAKey":    "--new-ca-key",
	"DevCADir":    "--dev-ca-dir",
	"GateTimeout": "--gate-timeout",
	"Resume":      "--resume",
	"Abort":       "--abort",
}

func runRotate(ctx context.Context, out io.Writer, f *rotateFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	log := slog.Default()
	st, cli, err := f.etcd.open(ctx, log)
	if err != nil {
		return err
	}
	defer cli.Close()
	cfg := rotation.Config{Store: st, TrustDomain: f.td, Actor: actor.Of(f.etcd.user), DevCADir: f.devCADir, SVIDLifetime: f.svidLifetime,
		MinValidity: f.minValidity, Exclude: f.exclude, Out: out, Log: log, Poll: f.poll, GateTimeout: f.gateTimeout, IstiodSettle: f.istiodSettle}
	if f.istiodSettle == 0 {
		cfg.IstiodSettle = -1 // none (0 in Config is the default)
	}
	if f.newCA != "" {
		c, err := readOneCert(f.newCA)
		if err != nil {
			return fmt.Errorf("--new-ca: %w", err)
		}
		cfg.NewCA = c
	}
	if f.newCAKey != "" {
		k, err := devca.ReadKey(f.newCAKey)
		if err != nil {
			return fmt.Errorf("--new-ca-key: %w", err)
		}
		cfg.NewCAKey = k
	}
	var rot *records.Rotation
	switch {
	case f.confirm:
		rot, err = rotation.ConfirmIssuer(ctx, cfg)
		if err == nil {
			fmt.Fprintf(out, "confirmed for job %s (phase %s); the running job continues, or run --resume\n", rot.ID, rot.Phase)
		}
		return flagErr(err, rotateFlagOf)
	case f.abort:
		rot, err = rotation.Abort(ctx, cfg)
	case f.resume:
		rot, err = rotation.Resume(ctx, cfg)
		if errors.Is(err, rotation.ErrNoJob) {
			fmt.Fprintf(out, "no rotation job for %s: nothing to resume\n", f.td)
			return nil
		}
	default:
		rot, err = rotation.Ensure(ctx, cfg)
		if errors.Is(err, rotation.ErrAlreadyDone) {
			return nil
		}
	}
	err = flagErr(err, rotateFlagOf)
	if errors.Is(err, rotation.ErrGateTimeout) {
		fmt.Fprintf(out, "%v\nthe job waits in etcd; run again (or --resume) to continue\n", err)
		return exitError{code: exitRotateBlocked}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "job %s: %s\n", rot.ID, rot.Phase)
	return nil
}

func readOneCert(path string) (*x509.Certificate, error) {
	certs, err := devca.ReadCerts(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates: give exactly the new root", path, len(certs))
	}
	return certs[0], nil
}

func newTrustStatusCmd() *cobra.Command {
	var ef etcdFlags
	var warn time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Bundles per trust domain, acks per cluster, rotation jobs, roots close to expiry",
		Long: `Status reads bundles/, acks/ and rotations/ and shows, per trust domain, the published
sequence and roots (with expiry), which clusters have not acked the current sequence, and
each rotation job with what it waits for.

` + etcdFlagsHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st, cli, err := ef.open(cmd.Context(), slog.Default())
			if err != nil {
				return err
			}
			defer cli.Close()
			return writeTrustStatus(cmd.Context(), cmd.OutOrStdout(), st, warn, output)
		},
	}
	addEtcdFlags(cmd.Flags(), &ef)
	addOutputFlag(cmd.Flags(), &output)
	cmd.Flags().DurationVar(&warn, "expiry-warning", expiry.WarnBefore, "warn about roots that expire sooner than this")
	return cmd
}

// writeTrustStatus prints operator.ReadTrustStatus in the -o format.
func writeTrustStatus(ctx context.Context, out io.Writer, st *store.Store, warn time.Duration, format string) error {
	ts, err := operator.ReadTrustStatus(ctx, st, time.Now(), warn)
	if err != nil {
		return err
	}
	return writeOutput(out, format, ts)
}
