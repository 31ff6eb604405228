//go:build tools

// Package tools keeps the control-plane commands in this module's dependency graph so
// that `go mod tidy` keeps their requirements. build.sh builds them with
// `go build k8s.io/kubernetes/cmd/...` from this directory.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
