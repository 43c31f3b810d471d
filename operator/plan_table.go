package operator

import (
	"fmt"
	"io"
	"strings"

	"github.com/meshfed/meshfed/internal/healthprobe"
)

// WriteTable renders the join plan for people: what is (or, with --dry-run, would be)
// written, the etcd role and its permissions, and every warning.
func (p *JoinPlan) WriteTable(w io.Writer) error {
	if p.DryRun {
		fmt.Fprintln(w, "DRY RUN: nothing is changed. Plan:")
	}
	switch p.Action {
	case ActionCreate:
		fmt.Fprintf(w, "cluster record   %s: create\n", p.Key)
	case ActionOverwrite:
		fmt.Fprintf(w, "cluster record   %s: OVERWRITE (--force)\n  was: %s\n", p.Key, describeCluster(p.Previous))
	default:
		fmt.Fprintf(w, "cluster record   %s: unchanged (already a member with these settings)\n", p.Key)
	}
	if p.Cluster != nil {
		fmt.Fprintf(w, "                 %s\n", describeCluster(p.Cluster))
	}
	if p.AuditKey != "" {
		fmt.Fprintf(w, "audit record     %s\n", p.AuditKey)
	}
	for _, g := range p.Gateways {
		st := "ok"
		if !g.OK {
			st = "NOT ANSWERING (" + g.Result + ")"
		}
		fmt.Fprintf(w, "gateway          %s: %s\n", g.Address, st)
	}
	for _, g := range p.HBONEGateways {
		st := "ok"
		if !g.OK {
			st = "NOT AN HBONE LISTENER OF THIS CLUSTER (" + g.Result + ")"
			if g.Result == healthprobe.ResultRefused || g.Result == healthprobe.ResultTimeout {
				st = "NOT ANSWERING (" + g.Result + ")"
			}
		}
		fmt.Fprintf(w, "hbone gateway    %s: %s\n", g.Address, st)
	}
	a := p.EtcdAuth
	switch {
	case a.Manage:
		state := "create"
		if a.UserExists {
			state = "exists"
		}
		fmt.Fprintf(w, "etcd auth        %s (user %s: %s, password: %s)\n", onOff(a.Enabled), a.User, state, a.Password)
		fmt.Fprintf(w, "etcd role        %s:\n", a.Role)
		for _, perm := range a.Permissions {
			fmt.Fprintf(w, "                   %-9s %s%s  (%s)\n", perm.Type, perm.Key, star(perm.Prefix), perm.What)
		}
		if len(a.Grant) > 0 && a.RoleExists {
			fmt.Fprintf(w, "                 grant: %s\n", strings.Join(a.Grant, "; "))
		}
		if len(a.Revoke) > 0 {
			fmt.Fprintf(w, "                 revoke: %s\n", strings.Join(a.Revoke, "; "))
		}
		if a.Credentials != "" {
			fmt.Fprintf(w, "credentials      %s (mode 0600)\n", a.Credentials)
		}
	default:
		fmt.Fprintf(w, "etcd auth        %s: no etcd user or role is managed\n", onOff(a.Enabled))
	}
	if p.Admin != nil {
		state := "create"
		if p.Admin.UserExists {
			state = "exists"
		}
		fmt.Fprintf(w, "operator user    %s (%s), role %s: readwrite %s*\n", p.Admin.User, state, p.Admin.Role, firstKey(p.Admin.Permissions))
		if p.Admin.Credentials != "" {
			fmt.Fprintf(w, "                 credentials in %s (mode 0600)\n", p.Admin.Credentials)
		}
	}
	if p.Manifest != nil {
		fmt.Fprintf(w, "manifests        %d files from %s into %s\n", len(p.Manifest.Files), p.Manifest.Source, p.Manifest.Out)
	}
	for _, d := range p.Done {
		fmt.Fprintf(w, "done: %s\n", d)
	}
	for _, x := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	return nil
}

// WriteTable renders the leave plan.
func (p *LeavePlan) WriteTable(w io.Writer) error {
	if p.DryRun {
		fmt.Fprintln(w, "DRY RUN: nothing is changed. Plan:")
	}
	if p.Record != nil {
		fmt.Fprintf(w, "cluster %s: %s\n", p.Cluster, describeCluster(p.Record))
	}
	for _, d := range p.Delete {
		if d.Count > 0 {
			fmt.Fprintf(w, "delete  %s\n", describeDelete(d))
		}
	}
	la := p.EtcdAuth
	if la.CanManage && la.Exists {
		fmt.Fprintf(w, "delete  etcd user and role %s (first, so the cluster cannot write again)\n", la.User)
	}
	if p.AuditKey != "" {
		fmt.Fprintf(w, "audit   %s\n", p.AuditKey)
	}
	for _, d := range p.Done {
		fmt.Fprintf(w, "done: %s\n", d)
	}
	for _, x := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func star(b bool) string {
	if b {
		return "*"
	}
	return ""
}

func firstKey(ps []Permission) string {
	if len(ps) == 0 {
		return ""
	}
	return ps[0].Key
}
