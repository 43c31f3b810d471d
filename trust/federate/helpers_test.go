package federate_test

import (
	"encoding/base64"
	"strconv"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func strconvU(n uint64) string { return strconv.FormatUint(n, 10) }
