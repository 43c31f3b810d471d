// Command meshfed is the one binary of meshfed: east-west gateway, federation service,
// operator commands and the local development federation. main.go is a shim: every
// subcommand lives in its own file here and only wires flags to the packages that do
// the work.
package main
