// Package devca is meshfed's development CA: one self-signed root per trust domain kept on
// disk, issuing short-lived X509-SVIDs for demo workloads and gateways. It is for
// development and demos (`meshfed trust dev-ca`, `meshfed dev up`): keys are files with
// mode 0600, nothing is in an HSM.
//
// A CA directory holds one subdirectory per trust domain:
//
//	DIR/<td>/state.json           which roots exist, which one issues, the SVID TTL
//	DIR/<td>/root-<fp>.pem        a root certificate (fp: first 16 hex of its sha256)
//	DIR/<td>/root-<fp>-key.pem    its private key (PKCS #8)
//
// Several roots may be trusted at once (during a rotation); exactly one issues. Every call
// reads the state from disk and every change takes a file lock and replaces state.json
// atomically, so a rotation job in one process and the federation service or `meshfed dev
// up` in another see one consistent CA.
package devca
