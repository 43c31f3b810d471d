package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// referencePath is the generated CLI reference.
const referencePath = "../../docs/reference.md"

// updateEnv regenerates docs/reference.md instead of checking it.
const updateEnv = "MESHFED_UPDATE_DOCS"

// TestReferenceDoc fails when docs/reference.md does not match the command tree (a flag
// or command was added or changed without regenerating it). Regenerate with
//
//	MESHFED_UPDATE_DOCS=1 go test ./cmd/meshfed -run TestReferenceDoc
func TestReferenceDoc(t *testing.T) {
	// Defaults read from the environment must not leak into the document.
	for _, e := range []string{"MESHFED_ETCD_ENDPOINTS", "MESHFED_ETCD_PASSWORD"} {
		t.Setenv(e, "")
	}
	got := renderReference(newRootCmd())
	if os.Getenv(updateEnv) != "" {
		if err := os.WriteFile(referencePath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", referencePath)
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v: generate it with %s=1 go test ./cmd/meshfed -run TestReferenceDoc", err, updateEnv)
	}
	if string(want) != got {
		t.Fatalf("docs/reference.md is stale (the commands changed): regenerate it with\n  %s=1 go test ./cmd/meshfed -run TestReferenceDoc\nfirst difference at line %d", updateEnv, firstDiffLine(string(want), got))
	}
}

func firstDiffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

// renderReference walks the command tree and writes the markdown reference: every
// command with its help text, usage and flags; then the keyspace and where the metrics
// are documented.
func renderReference(root *cobra.Command) string {
	var b strings.Builder
	b.WriteString("# meshfed reference\n\n")
	b.WriteString("<!-- Generated from the command tree by cmd/meshfed/reference_test.go; do not edit.\n")
	b.WriteString("     Regenerate: " + updateEnv + "=1 go test ./cmd/meshfed -run TestReferenceDoc -->\n\n")
	b.WriteString("Contents: [commands](#commands) · [global flags](#global-flags) · [keyspace](#etcd-keyspace-v1) · [metrics](#metrics) · [JSON outputs](#json-outputs)\n\n")
	b.WriteString("## Commands\n\n")
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if c != root {
			all = append(all, c)
		}
		subs := c.Commands()
		sort.Slice(subs, func(i, j int) bool { return subs[i].Name() < subs[j].Name() })
		for _, s := range subs {
			walk(s)
		}
	}
	walk(root)
	for _, c := range all {
		fmt.Fprintf(&b, "- [`%s`](#%s) — %s\n", c.CommandPath(), anchor(c.CommandPath()), c.Short)
	}
	b.WriteString("\n## Global flags\n\nEvery command takes these:\n\n")
	writeFlags(&b, root.PersistentFlags())
	for _, c := range all {
		fmt.Fprintf(&b, "\n### %s\n\n%s\n\n", c.CommandPath(), c.Short)
		if c.Long != "" {
			fmt.Fprintf(&b, "```text\n%s\n```\n\n", strings.TrimRight(c.Long, "\n"))
		}
		if c.Runnable() {
			fmt.Fprintf(&b, "Usage: `%s`\n\n", c.UseLine())
		}
		if subs := visible(c.Commands()); len(subs) > 0 {
			b.WriteString("Subcommands: ")
			for i, s := range subs {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "[`%s`](#%s)", s.Name(), anchor(s.CommandPath()))
			}
			b.WriteString("\n\n")
		}
		if c.HasLocalFlags() {
			writeFlags(&b, c.LocalNonPersistentFlags())
		}
	}
	b.WriteString(keyspaceSection)
	b.WriteString(metricsSection)
	b.WriteString(jsonSection)
	return b.String()
}

func visible(cs []*cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range cs {
		if !c.Hidden && c.Name() != "help" {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// anchor is GitHub's heading anchor for "### meshfed policy set".
func anchor(path string) string {
	return strings.ReplaceAll(strings.ToLower(path), " ", "-")
}

func writeFlags(b *strings.Builder, fs *pflag.FlagSet) {
	b.WriteString("| flag | default | meaning |\n|---|---|---|\n")
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := "`--" + f.Name + "`"
		if f.Shorthand != "" {
			name = "`-" + f.Shorthand + "`, " + name
		}
		def := f.DefValue
		switch {
		case def == "" || def == "[]":
			def = ""
		case f.Value.Type() == "bool" && def == "false":
			def = ""
		default:
			def = "`" + def + "`"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", name, def, strings.ReplaceAll(f.Usage, "|", "\\|"))
	})
	b.WriteString("\n")
}

var keyspaceSection = md(`
## etcd keyspace v1

Every key is under the prefix (§--prefix§, default §/meshfed/v1/§). Values are versioned JSON
(§{\"version\":1,...}§); readers tolerate unknown fields and refuse versions newer than they know
(upgrade that cluster). Every write that depends on a read is a transaction comparing the
mod revision. The record types are in keyspace/records; see docs/federation.md for the
lease and stale semantics and ../shared/design.md for the contract.

| key | value | written by | etcd role that may write it |
|---|---|---|---|
| §clusters/<cluster>§ | cluster record: name, network, region, zone, trustDomain, gateways, joinedAt | §meshfed join§ | operator; the cluster itself (§meshfed-cluster-<c>§) |
| §alive/<cluster>§ | heartbeat on the cluster's own lease (TTL default 10 s): instance, since | the cluster's federation service | the cluster |
| §exports/<cluster>/<namespace>/<service>§ | ports, endpoints (address, zone, ready, weight), revision, exportedAt | the cluster's federation service | the cluster |
| §bundles/<trust-domain>§ | SPIFFE bundle (JWKS with spiffe_sequence), digest, owner, lock | the cluster owning the trust domain; a rotation job holding the lock | that cluster; operator |
| §acks/<cluster>/bundles/<trust-domain>§ | bundle sequence and digest the cluster applied, when; §istiod: true§ when the cluster serves istiod (the rotation gates then wait for its istiods too) | the cluster's federation service | the cluster |
| §acks/<cluster>/istio/<instance>§ | the istiods one federation replica feeds (MCP): ACK/NACK state, last push, and §roots§ — the root fingerprints each istiod gives its proxies over PCDS, as the replica's probe (§--istiod-xds§) sees them (addr, fingerprints, since, error); on the replica's own lease | the cluster's federation service (each replica) | the cluster |
| §acks/<cluster>/health/<instance>§ | what one federation replica's health checker sees of every other cluster's gateways: per cluster down (no usable gateway) and since when, per gateway state and since when (the replica's clock); on the replica's own lease, rewritten on change at most once a second | the cluster's federation service (each replica) | the cluster |
| §drills/<id>§ | a drill: cluster, service (or all), until, startedBy, fault (cordon by default; a gateway fault with its faultDeadline); on its own lease | §meshfed drill§ | operator |
| §rotations/<trust-domain>§ | root rotation state machine | §meshfed trust rotate§ (docs/trust.md) | operator |
| §policy/<namespace>/<service>§ | failover order override, localFirst, updatedBy | §meshfed policy set§ | operator |
| §audit/<time>-<what>§ | who did what: join, join-force, leave (actor, detail JSON) | §meshfed join§, §meshfed leave§ | operator |

Roles: §meshfed-cluster-<c>§ has read on the whole prefix and readwrite on exactly its own keys
above; §meshfed-operator§ (made by §meshfed join --admin-user§) has readwrite on the whole
prefix; managing etcd users and roles needs etcd's root role. With a non-default prefix the
role and user names get a suffix derived from the prefix, so clustersets sharing one etcd
stay apart.
`)

var metricsSection = md(`
## Metrics

Each long-running component serves Prometheus metrics on its admin listener
(§/metrics§, with §/healthz§ and §/readyz§). The metric names and labels are documented with
their component:

- east-west gateway (§meshfed gateway§): docs/eastwest.md
- federation service, etcd store and import view (§meshfed federation§): docs/federation.md
- xDS server and gateway health checker: docs/xds.md
- trust bundles and rotation: docs/trust.md

The operator commands (join, leave, policy, status, drill) are short-lived and export no
metrics; a drill's measurements go to its §--report§ file.
`)

var jsonSection = md(`
## JSON outputs

§-o json§ (and §-o yaml§, the same fields) of the operator commands are stable documents for
scripts; fields are only ever added.

- §meshfed status -o json§: §prefix, revision, time, from, order_source§; §clusters[]§ (§name, joined, region,
  zone, network, trust_domain, joined_at, alive, instance, alive_since, stale, stale_since,
  last_activity, gateways[] {address, probed, healthy, result, line, detail, rtt_ms},
  exports, bundle {trust_domain, owner, sequence, digest, revoked, locked_by, updated_at,
  roots_expire, error}, acks[] {trust_domain, sequence, current, applied_at}, acks_behind[],
  cordoned_by_drills[], istio {replicas[], sources[], istiods[] {node, replica, via, connected,
  synced, last_push, last_ack, nacked[] {type, error}, roots {addr, fingerprints[], since,
  error}}, state_at, from_disk, unknown_types[], nacks[] {replica, type, reason, count}}§);
  §services[]§ (§service, type, ports[], exporters[] {cluster,
  ready_endpoints, endpoints, stale, cordoned, revision}, conflicts[], policy, order[] {port,
  levels[] {priority, cluster, direct, weight, endpoints[], stale, panic}}, excluded[]
  {cluster, port, reason}§); §drills[]§ (§id, cluster, service, until, started_by, started_at,
  lease_ttl_seconds, lease_bound§); §rotations[]§ (§trust_domain, id, phase, active, waiting[],
  updated_at, raw§ — raw is the record as generic JSON when this binary cannot decode it);
  §policies[]§; §warnings[]§.
- §meshfed join -o json§: the plan: §dry_run, key, action (create|unchanged|overwrite), cluster,
  previous, audit_key, gateway_checks[], hbone_gateway_checks[] (with --hbone-gateway),
  etcd_auth {enabled, manage, user, role, user_exists, role_exists, password
  (new|unchanged|rotated|client-certificate), permissions[] {key, prefix, type, what},
  grant[], revoke[], credentials_out}, admin, manifests, warnings[], done[]§.
- §meshfed leave -o json§: §dry_run, cluster, record, delete[] {key, prefix, count, what},
  etcd_auth {enabled, user, role, can_manage, exists}, audit_key, warnings[], done[]§.
- §meshfed policy get|list|set -o json§: §service, key, order[], local_first, updated_at,
  updated_by, unknown_clusters[]§ (list: §{policies: [...]}§; set: §{policy, change, warnings}§).
- §meshfed drill -o json§ and §--report FILE§: §plan {id, key, fail, service, affected[]
  {service, clients[] {cluster, port, before[], after[], impact}}, traffic, warnings},
  cordon_at, lift_at, ended, interrupted, traffic {from, target, rate, requests, errors,
  by_cluster, before_requests, before_share_failed, drained_after_ms, hits_while_cordoned,
  errors_during_switch, errors_while_cordoned, back_after_ms, notes[], error_kinds,
  order_changes[], marks[], bucket_ms, timeline[] {at_ms, by_cluster, errors}, samples[]
  {at_ms, latency_ms, cluster, error}, route}§.
`)

// md turns § into backticks (Go raw strings cannot hold backticks).
func md(s string) string { return strings.ReplaceAll(s, "§", "`") }
