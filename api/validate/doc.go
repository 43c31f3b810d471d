// Package validate checks user input and records field by field. Every error
// names the field (as a path such as services[0].ports[1].port) and says how to
// fix it, so a bad file or flag is reported once, completely, in words a user can act on.
package validate
