package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// tabler is a value that renders itself for people (-o table).
type tabler interface {
	WriteTable(w io.Writer) error
}

// addOutputFlag adds -o/--output to a command that prints a result.
func addOutputFlag(fs *pflag.FlagSet, format *string) {
	fs.StringVarP(format, "output", "o", outputTable, "output format: table (for people), json or yaml (for machines; field names are stable)")
}

// checkOutput validates -o before anything runs.
func checkOutput(format string) error {
	switch format {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return fmt.Errorf("-o/--output %q: use table, json or yaml", format)
}

// machineOutput reports whether the format is for machines (progress then goes to stderr
// so that stdout stays parseable).
func machineOutput(format string) bool { return format == outputJSON || format == outputYAML }

// writeOutput prints v in the format: table through its WriteTable (JSON when it has
// none), json indented, yaml from the JSON field names.
func writeOutput(w io.Writer, format string, v any) error {
	switch format {
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	default:
		if t, ok := v.(tabler); ok {
			return t.WriteTable(w)
		}
		return writeOutput(w, outputJSON, v)
	}
}
