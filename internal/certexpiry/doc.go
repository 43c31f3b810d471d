// Package certexpiry exports the expiry of the certificates a process presents or uses
// (meshfed_cert_expiry_seconds): files re-read at scrape time, so a renewed file is seen
// without a restart, and certificates held in memory. Every long-running component
// registers it on its admin registry, the data plane's gateway process included: it has
// no dependency on the control plane. Trust roots and the warnings of `meshfed status`
// are trust/expiry's.
package certexpiry
