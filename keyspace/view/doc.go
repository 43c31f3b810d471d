// Package view is the merged import view: for every service exported anywhere in the
// clusterset, which clusters export it, with what ports and how many ready endpoints, and
// whether an exporter is stale (heartbeat lost) or in conflict (MCS API rules). The view is
// pure data built from etcd records; the federation service keeps it current and hands it
// to the planner, the xDS server and the Kubernetes importer.
package view
