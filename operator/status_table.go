package operator

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable renders the status for people (-o table).
func (s *Status) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "CLUSTERS  (etcd revision %d, prefix %s)\n", s.Revision, s.Prefix)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREGION/ZONE\tHEARTBEAT\tGATEWAYS (probed from here)\tEXPORTS\tBUNDLE\tACKS")
	for _, c := range s.Clusters {
		loc := c.Region + "/" + c.Zone
		if !c.Joined {
			loc = "(not joined)"
		}
		hb := "alive"
		if c.AliveSince != nil {
			hb += ", up " + ago(s.Time, *c.AliveSince)
		}
		if c.Stale {
			hb = "no heartbeat"
			if c.LastActivity != nil {
				hb = "STALE (last write " + ago(s.Time, *c.LastActivity) + " ago)"
			}
		}
		if len(c.Cordoned) > 0 {
			hb += " cordoned:" + strings.Join(c.Cordoned, ",")
		}
		var gws []string
		for _, g := range c.Gateways {
			switch {
			case !g.Probed:
				gws = append(gws, g.Address+" (not probed)")
			case g.Healthy:
				gws = append(gws, fmt.Sprintf("%s ok %.1fms", g.Address, g.RTTMs))
			default:
				gws = append(gws, fmt.Sprintf("%s DOWN (%s)", g.Address, g.Result))
			}
		}
		bundle := "-"
		if c.Bundle != nil {
			bundle = fmt.Sprintf("seq %d", c.Bundle.Sequence)
			if c.Bundle.LockedBy != "" {
				bundle += " locked"
			}
			if c.Bundle.Error != "" {
				bundle += " INVALID"
			}
		}
		switch {
		case c.SharesTrustDomainWith != "":
			bundle += " (shared, owner " + c.SharesTrustDomainWith + ")"
		case len(c.TrustDomainSharedBy) > 0:
			bundle += " (shared with " + strings.Join(c.TrustDomainSharedBy, ",") + ")"
		}
		acks := "ok"
		if len(c.AcksBehind) > 0 {
			acks = "behind: " + strings.Join(c.AcksBehind, ",")
		}
		if len(c.Acks) == 0 && len(c.AcksBehind) == 0 {
			acks = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.Name, loc, hb, orDash(strings.Join(gws, ", ")), c.Exports, bundle, acks)
	}
	if len(s.Clusters) == 0 {
		fmt.Fprintln(tw, "(none: run meshfed join)\t\t\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if s.From != "" {
		fmt.Fprintf(w, "SERVICES  (failover order as seen from %s)\n", s.From)
	} else {
		fmt.Fprintln(w, "SERVICES  (add --from CLUSTER for the failover order)")
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hdr := "SERVICE\tPORTS\tEXPORTED BY (ready endpoints)"
	if s.From != "" {
		hdr += "\tORDER"
	}
	fmt.Fprintln(tw, hdr)
	for _, sv := range s.Services {
		var ports []string
		for _, p := range sv.Ports {
			ports = append(ports, fmt.Sprint(p))
		}
		var ex []string
		for _, e := range sv.Exporters {
			x := fmt.Sprintf("%s(%d)", e.Cluster, e.ReadyEndpoints)
			if e.Stale {
				x += "stale"
			}
			if e.Cordoned {
				x += "cordoned"
			}
			ex = append(ex, x)
		}
		line := sv.Service + "\t" + strings.Join(ports, ",") + "\t" + strings.Join(ex, " ")
		if s.From != "" {
			o := ""
			if sv.plan != nil {
				o = sv.plan.String()
			}
			if sv.Policy != nil {
				o += "  (policy)"
			}
			line += "\t" + o
		}
		fmt.Fprintln(tw, line)
		for _, c := range sv.Conflicts {
			fmt.Fprintf(tw, "  conflict: %s\t\t\n", c)
		}
	}
	if len(s.Services) == 0 {
		fmt.Fprintln(tw, "(no exported services)\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if err := s.writeIstio(w); err != nil {
		return err
	}
	if len(s.Drills) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "LIVE DRILLS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCLUSTER\tSERVICE\tUNTIL\tLEASE TTL\tSTARTED BY")
		for _, d := range s.Drills {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%ds\t%s\n", d.ID, d.Cluster, d.Service, d.Until.Format(time.RFC3339), d.LeaseTTL, d.StartedBy)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Rotations) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "ROTATIONS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TRUST DOMAIN\tID\tPHASE\tWAITING FOR\tUPDATED")
		for _, r := range s.Rotations {
			upd := "-"
			if r.UpdatedAt != nil {
				upd = ago(s.Time, *r.UpdatedAt) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.TrustDomain, orDash(r.ID), r.Phase, orDash(strings.Join(r.Waiting, ", ")), upd)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Warnings) > 0 {
		fmt.Fprintln(w)
		for _, x := range s.Warnings {
			fmt.Fprintf(w, "warning: %s\n", x)
		}
	}
	return nil
}

// writeIstio lists, for the clusters whose federation serves istiod (--istio-mcp-listen),
// each connected istiod with its ACK/NACK state, last push and the roots it gives its
// proxies (PCDS, as the replica's probe sees them), then each failing probe's error.
func (s *Status) writeIstio(w io.Writer) error {
	found := false
	for _, c := range s.Clusters {
		found = found || c.Istio != nil
	}
	if !found {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ISTIOD  (fed by the federation over MCP: docs/istio.md)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER	ISTIOD	VIA	STATE	LAST PUSH	LAST ACK	ROOTS (PCDS)")
	var probeErrs []string
	for _, c := range s.Clusters {
		is := c.Istio
		if is == nil {
			continue
		}
		if len(is.Istiods) == 0 {
			what := "(no istiod connected"
			if len(is.Sources) > 0 {
				what = "(no istiod behind " + strings.Join(is.Sources, ",")
			}
			fmt.Fprintf(tw, "%s	%s)	-	-	-	-	-\n", c.Name, what)
			continue
		}
		for _, i := range is.Istiods {
			state := "syncing"
			if i.Synced {
				state = "ACKed (synced)"
			}
			if len(i.NACKed) > 0 {
				var ts []string
				for _, x := range i.NACKed {
					ts = append(ts, x.Type)
				}
				state = "NACK " + strings.Join(ts, ",")
			}
			fmt.Fprintf(tw, "%s	%s	%s	%s	%s	%s	%s\n", c.Name, i.Node, orDash(i.Via), state, agoPtr(s.Time, i.LastPush), agoPtr(s.Time, i.LastAck), i.Roots.cell())
			if r := i.Roots; r != nil && r.Error != "" {
				probeErrs = append(probeErrs, fmt.Sprintf("roots probe of istiod %s (cluster %s) at %s: %s", i.Node, c.Name, r.Addr, r.Error))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range probeErrs {
		fmt.Fprintln(w, e)
	}
	return nil
}

// cell is the ROOTS (PCDS) column: the number of roots istiod gives its proxies and their
// short fingerprints ("2: 1a2b3c4d… 5e6f7a8b…", the form of `meshfed trust status`; "none"
// when istiod sends none); "-" when not followed (no --istiod-xds), "no answer yet" before
// the first answer, "probe failing" (with the last roots received, if any) while the probe
// has an error.
func (r *IstiodRootsView) cell() string {
	if r == nil {
		return "-"
	}
	roots := "none"
	if len(r.Fingerprints) > 0 {
		fps := make([]string, len(r.Fingerprints))
		for k, fp := range r.Fingerprints {
			fps[k] = shortFP(fp)
		}
		roots = fmt.Sprintf("%d: %s", len(fps), strings.Join(fps, " "))
	}
	switch {
	case r.Error != "" && r.Since != nil:
		return "probe failing (last received " + roots + ")"
	case r.Error != "":
		return "probe failing"
	case r.Since == nil:
		return "no answer yet"
	}
	return roots
}

// shortFP names a root by the first 8 hex digits of its "sha256:<hex>" fingerprint.
func shortFP(fp string) string {
	h := strings.TrimPrefix(fp, "sha256:")
	if len(h) > 8 {
		h = h[:8]
	}
	return h + "…"
}

func agoPtr(now time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	return ago(now, *t) + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago formats now-t coarsely: 3s, 4m, 2h, 5d.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
