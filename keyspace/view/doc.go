// Package view is the merged import view: for every service exported anywhere in the
// clusterset, which clusters export it, with what ports and how many ready endpoints, and
// whether an exporter is stale (heartbeat lost) or in conflict (MCS API rules). The view is
// pure data built from etcd records by one builder, Mirror (fed by a store.Syncer, or
// with a one-time read): the federation service keeps it current and hands it to the
// planner, the xDS server and the Kubernetes importer; `meshfed status` and the drill
// build theirs the same way.
package view
