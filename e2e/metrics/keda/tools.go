//go:build tools

// Package tools keeps KEDA's operator and metrics API server in this module's dependency
// graph so that `go mod tidy` keeps their requirements. build.sh builds them with
// `go build github.com/kedacore/keda/v2/cmd/...` from this directory. A wrapper module is
// needed because KEDA's go.mod carries a replace directive, which `go install pkg@version`
// refuses; the same directive is repeated in go.mod here.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
