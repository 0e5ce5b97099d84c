package v1alpha1_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// The API server bounds the cost of CRD validation rules by the sizes the
// schema declares, and `kubectl explain` shows the descriptions: every string
// needs a maxLength (or an enum or format), every list a maxItems, every map
// a maxProperties, and every field a description.
func TestCRDSchemasAreBoundedAndDocumented(t *testing.T) {
	files, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(files) != 2 {
		t.Fatalf("CRD files: %v, %v", files, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
			checkSchema(t, crd.Spec.Names.Kind+".spec", &spec)
		}
	}
}

func checkSchema(t *testing.T, path string, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	if s.Description == "" {
		t.Errorf("%s has no description", path)
	}
	switch s.Type {
	case "string":
		if s.MaxLength == nil && len(s.Enum) == 0 && s.Format == "" {
			t.Errorf("%s: string without maxLength or enum", path)
		}
	case "array":
		if s.MaxItems == nil {
			t.Errorf("%s: list without maxItems", path)
		}
		if s.Items != nil && s.Items.Schema != nil {
			item := *s.Items.Schema
			if item.Description == "" {
				// A list item inherits its list's description in explain.
				item.Description = s.Description
			}
			checkSchema(t, path+"[]", &item)
		}
	case "object":
		if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
			if s.MaxProperties == nil {
				t.Errorf("%s: map without maxProperties", path)
			}
			v := *s.AdditionalProperties.Schema
			if v.Description == "" {
				v.Description = s.Description
			}
			checkSchema(t, path+"{}", &v)
		}
	}
	for name, p := range s.Properties {
		checkSchema(t, path+"."+strings.TrimSpace(name), &p)
	}
}
