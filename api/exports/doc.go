// Package exports is the exports file format: the services a cluster offers to the
// clusterset, with their ports and endpoints. The east-west gateway reads it as a static
// route table and the file discovery source publishes it to the federation, so both
// planes share one parser and one set of validation rules.
//
//	services:
//	  - name: echo
//	    namespace: demo
//	    ports:
//	      - {name: tls, port: 8443, targetPort: 9443}
//	    endpoints:
//	      - {address: 127.0.1.1, zone: z1, ready: true, serviceAccount: echo}
//	      - {address: 127.0.1.2, zone: z2, ready: false}
package exports
