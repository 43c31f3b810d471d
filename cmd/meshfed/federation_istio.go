package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/xds"
)

// istioFlags are the federation service's flags for istiod (MCP config source).
type istioFlags struct {
	listen    string
	stateFile string
	tlsCert   string
	tlsKey    string
	istiodXDS string
}

const istioFlagsHelp = `Istio (meshfed as istiod's config source; docs/istio.md):
  --istio-mcp-listen       serve the same plans to istiod over MCP (meshConfig.configSources
                           xds://ADDR; 'meshfed istio config' prints istiod's settings). Off by default
  --istio-mcp-state-file   keep the last served state here and serve it at start (istiod exits at
                           start when its config source is unreachable)
  --istio-mcp-tls-cert/--istio-mcp-tls-key   TLS (istiod's client sends no certificate: fence the
                           listener with a NetworkPolicy admitting istiod alone)
  --istiod-xds             where each connected istiod's plaintext xDS is (:PORT = the istiod's
                           address at PORT; default :15010): the federation follows its PCDS to
                           see the roots istiod gives its proxies, which rotation gates wait for`

func addIstioFlags(fl *pflag.FlagSet, f *istioFlags) {
	fl.StringVar(&f.listen, "istio-mcp-listen", "", "serve imported services to istiod as an MCP (xDS) config source on this address (off when empty)")
	fl.StringVar(&f.stateFile, "istio-mcp-state-file", "", "with --istio-mcp-listen: file keeping the last served Istio state, served at start before the first plan")
	fl.StringVar(&f.tlsCert, "istio-mcp-tls-cert", "", "with --istio-mcp-listen: serve TLS with this certificate chain (PEM; istiod's client does TLS without a client certificate)")
	fl.StringVar(&f.tlsKey, "istio-mcp-tls-key", "", "private key (PEM) of --istio-mcp-tls-cert")
	fl.StringVar(&f.istiodXDS, "istiod-xds", ":15010", "with --istio-mcp-listen: each connected istiod's plaintext xDS, :PORT (at the istiod's address) or HOST:PORT; its PCDS tells rotation gates the roots istiod gives its proxies (empty: not followed, and the gates wait for this cluster)")
}

func (f *istioFlags) validate() error {
	var errs validate.Errors
	if f.listen == "" {
		if f.stateFile != "" || f.tlsCert != "" || f.tlsKey != "" {
			errs.Add("--istio-mcp-listen", "the --istio-mcp-* options need --istio-mcp-listen (e.g. --istio-mcp-listen :15020)")
		}
		return errs.Err()
	}
	errs.AddErr("--istio-mcp-listen", validate.ListenAddr(f.listen))
	if f.istiodXDS != "" {
		errs.AddErr("--istiod-xds", validate.ListenAddr(f.istiodXDS))
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		errs.Add("--istio-mcp-tls-cert", "give --istio-mcp-tls-cert and --istio-mcp-tls-key together (or neither, for plaintext)")
	}
	return errs.Err()
}

// options are the agent's MCP server options (Listen empty: off).
func (f *istioFlags) options() (istio.Options, error) {
	o := istio.Options{Listen: f.listen, StateFile: f.stateFile, IstiodXDS: f.istiodXDS}
	if f.tlsCert != "" {
		// The same reloading server TLS as xDS, never requiring a client certificate.
		tc, err := xds.TLSFiles{Cert: f.tlsCert, Key: f.tlsKey}.ServerConfig()
		if err != nil {
			return o, fmt.Errorf("--istio-mcp-tls-cert/--istio-mcp-tls-key: %w", err)
		}
		o.ServerTLS = tc
	}
	return o, nil
}
