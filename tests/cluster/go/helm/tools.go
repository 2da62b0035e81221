//go:build tools

// Package tools pins helm's command in this module's go.mod, so `go build` needs no network
// beyond the module proxy and no version lookups.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
