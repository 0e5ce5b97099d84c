/*
Copyright 2026 The sallyport Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package crd embeds the CustomResourceDefinitions that `make manifests`
// (controller-gen) writes to bases/, so code that must apply the API
// server's defaults and validation offline (internal/loader) reads the very
// schemas the cluster installs. Only the YAMLs are generated; this file is
// hand-written and controller-gen ignores it.
package crd

import "embed"

// Bases holds bases/*.yaml: one CustomResourceDefinition per file.
//
//go:embed bases/*.yaml
var Bases embed.FS
