package main

import (
	"path/filepath"
	"testing"

	"github.com/meshfed/meshfed/internal/testetcd"
)

// TestMessagesAsBefore: the whole error of join, leave, policy set, status, istio config,
// drill and trust rotate reads as it did when the libraries still named the flags
// themselves (before e699fcf; the same commands run by that build gave these texts):
// libraries name fields and refer to others (validate.Ref), the commands map them back.
func TestMessagesAsBefore(t *testing.T) {
	srv := testetcd.Start(t)
	ep := "--etcd-endpoints=" + srv.Clients[0]
	eastGW := freeAddr(t)
	gw := eastGW
	join := func(name string, extra ...string) []string {
		return append([]string{"join", ep, "--cluster", name, "--region", "eu", "--zone", "eu-a", "--network", "net-" + name,
			"--trust-domain", name + ".example.org", "--gateway", gw, "--probe-timeout", "200ms"}, extra...)
	}
	if _, err := runCLI(t, join("east")...); err != nil {
		t.Fatal(err)
	}
	gw = freeAddr(t) // west's, free of east's
	dir := t.TempDir()
	rotate := rotateOtherKey(t, ep, dir)
	const notLabel = "is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit"

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"join", ep, "--cluster", "East", "--zone", "z", "--network", "n", "--trust-domain", "spiffe://x", "--gateway", "nope,nope", "--etcd-users", "sometimes"},
			`join East: 7 problems:
  - --cluster: "East" ` + notLabel + ` (e.g. --cluster east)
  - --region: must not be empty (e.g. --region eu-west-1)
  - --trust-domain: "spiffe://x": give the bare trust domain without spiffe://
  - --gateway: "nope" is not HOST:PORT (for example 203.0.113.10:15443 or gw.example.com:15443)
  - --gateway: "nope" is not HOST:PORT (for example 203.0.113.10:15443 or gw.example.com:15443)
  - --gateway: nope is given twice
  - --etcd-users: "sometimes": use auto, always or never`},
		{[]string{"join", ep, "--cluster", "west", "--region", "EU", "--zone", "eu-a", "--network", "net", "--trust-domain", "Bad_TD", "--gateway", gw, "--share-trust-domain-with", "Bad_X", "--admin-user", "Bad_U"},
			`join west: 5 problems:
  - --region: "EU" ` + notLabel + ` (e.g. --region eu-west-1)
  - --trust-domain: "Bad_TD" is not a DNS name: use dot-separated labels of lower-case letters, digits and '-' (e.g. --trust-domain east.example.org)
  - --share-trust-domain-with: "Bad_X" ` + notLabel + `: name the member cluster that owns the trust domain (e.g. --share-trust-domain-with east)
  - --admin-user: "Bad_U" ` + notLabel + ` (e.g. --admin-user meshfed-admin)
  - --share-trust-domain-with: Bad_X is not a member (no /meshfed/v1/clusters/Bad_X): join the cluster that owns Bad_TD first, without this flag`},
		{[]string{"join", ep, "--cluster", "west", "--region", "eu", "--zone", "eu-a", "--network", "net", "--trust-domain", "west.example.org"},
			"join west: --gateway: at least one east-west gateway address is required (e.g. --gateway 203.0.113.10:15443; repeat for more)"},
		{append(join("east"), "--region", "us", "--zone", "us-a"),
			`join east: --cluster: "east" is already a member with different settings (region=eu zone=eu-a network=net-east trust-domain=east.example.org gateways=` + eastGW + `; you asked for region=us zone=us-a network=net-east trust-domain=east.example.org gateways=` + gw + "): pick another name, run `meshfed leave --cluster east` first, or add --force to overwrite (audited)"},
		{join("west", "--share-trust-domain-with", "west"),
			"join west: --share-trust-domain-with: west is this cluster: name the member that owns the trust domain, or leave the flag out to own it"},
		{join("west", "--trust-domain", "east.example.org"),
			"join west: --trust-domain: east.example.org is the trust domain of cluster east (/meshfed/v1/clusters/east): a cluster owns its own trust domain; pick another, or, when these clusters are one mesh with one shared root (Istio multi-network), add --share-trust-domain-with east (the clusters then trust each other's workloads fully)"},
		{join("west", "--rotate-password", "--cert-auth"),
			"join west: --rotate-password: a client-certificate user has no password: leave out --rotate-password or --cert-auth"},
		{join("west", "--hbone-gateway", "127.0.0.1:15008,127.0.0.1:15009"),
			"join west: --hbone-gateway: --hbone-gateway[1]: port 15009 differs from --hbone-gateway[0]'s 15008: give every HBONE gateway address the same port (istiod takes one HBONE port per network gateway) (e.g. --hbone-gateway 203.0.113.10:15008; repeat for more)"},
		{join("west", "--emit-manifests", filepath.Join(dir, "emit"), "--deploy-dir", filepath.Join(dir, "nodeploy")),
			"join west: --emit-manifests: " + filepath.Join(dir, "nodeploy", "kustomize") + " does not exist: the Kubernetes manifests (deploy/kustomize) are not in this checkout or release yet; give --deploy-dir pointing at a meshfed deploy/ directory, or leave out --emit-manifests"},
		{join("west", "--etcd-users", "always"),
			"join west: --credentials-out: required: join creates etcd user meshfed-cluster-west with a new password and writes it only to this file (mode 0600), e.g. --credentials-out west-etcd.json"},
		{join("west", "--etcd-users", "always", "--credentials-out", filepath.Join(dir, "c.json"), "--admin-credentials-out", filepath.Join(dir, "c.json")),
			"join west: --admin-credentials-out: must differ from --credentials-out"},
		{[]string{"leave", ep, "--cluster", "East"},
			`leave East: --cluster: "East" ` + notLabel + ` (e.g. --cluster east)`},
		{[]string{"policy", "set", ep, "demo/echo"},
			"policy set demo/echo: --order: nothing to set: give the cluster order (e.g. --order west,north) and/or --no-local-first; `meshfed policy delete` goes back to the default order"},
		{[]string{"status", ep, "--from", "nowhere"},
			"--from nowhere: not a member of the clusterset (members: [east])"},
		{[]string{"istio", "config", ep, "--cluster", "east", "--mcp-address", "127.0.0.1:15011", "--bundle-dir", filepath.Join(dir, "none")},
			"bundle dir " + filepath.Join(dir, "none") + ": bundle map: stat " + filepath.Join(dir, "none", "bundle-map.json") + ": no such file or directory (the directory `meshfed federation --bundle-dir` writes)"},
		{[]string{"istio", "config", ep, "--cluster", "east", "--mcp-address", "nope"},
			`--mcp-address: "nope" is not HOST:PORT (for example 203.0.113.10:15443 or gw.example.com:15443)`},
		{[]string{"drill", ep, "--fail", "West", "--id", "d1", "--duration", "1ms", "--from", "east"},
			`drill: 3 problems:
  - --fail: "West" ` + notLabel + ` (the cluster to fail, e.g. west)
  - --duration: 1ms: at least 1s (e.g. 60s)
  - --from/--target: give both (traffic from one cluster's point of view to a target) or neither`},
		{[]string{"drill", ep, "--fail", "east", "--from", "east", "--target", "demo/echo:8080", "--dry-run"},
			`drill: 2 problems:
  - --from: east is the failed cluster: its own traffic stays local (local first); pick another cluster's point of view
  - --target: no cluster exports demo/echo`},
		{append(rotate, "--dev-ca-dir", ""), "--new-ca-key is for the dev CA: give --dev-ca-dir too"},
		{append(rotate, "--dev-ca-dir", dir), "--new-ca-key is not the key of --new-ca: give the key the certificate was made for"},
		{[]string{"trust", "rotate", ep, "--trust-domain", "a.example", "--abort"}, "no rotation job for this trust domain a.example: start one with --new-ca"},
		{[]string{"trust", "rotate", ep, "--trust-domain", "a.example", "--confirm-issuer-switched"}, "no rotation job for this trust domain a.example: start one with --new-ca"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || err.Error() != c.want {
			t.Errorf("meshfed %v:\n got: %v\nwant: %s", c.args[:2], err, c.want)
		}
	}
}
