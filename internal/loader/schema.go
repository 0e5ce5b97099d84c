package loader

import (
	"context"
	"fmt"
	"io/fs"
	"path"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/config/crd"
)

// crdSchema is what the API server derives from one served version of a
// CustomResourceDefinition to default, prune and validate its objects.
type crdSchema struct {
	gvk        schema.GroupVersionKind
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// loadSchemas reads the embedded CRDs (config/crd/bases) and prepares, per
// kind, the same structural schema, OpenAPI validator and CEL validator the
// API server builds for them.
func loadSchemas() (map[schema.GroupVersionKind]*crdSchema, error) {
	files, err := fs.Glob(crd.Bases, "bases/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("listing embedded CRDs: %w", err)
	}
	out := map[schema.GroupVersionKind]*crdSchema{}
	for _, f := range files {
		raw, err := crd.Bases.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading embedded CRD %s: %w", f, err)
		}
		var def apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(raw, &def); err != nil {
			return nil, fmt.Errorf("decoding embedded CRD %s: %w", path.Base(f), err)
		}
		for i := range def.Spec.Versions {
			v := &def.Spec.Versions[i]
			if !v.Served || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			s, err := newCRDSchema(schema.GroupVersionKind{Group: def.Spec.Group, Version: v.Name, Kind: def.Spec.Names.Kind}, v.Schema.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("embedded CRD %s version %s: %w", path.Base(f), v.Name, err)
			}
			out[s.gvk] = s
		}
	}
	for _, kind := range []string{kindConnection, kindResource} {
		if _, ok := out[v1alpha1.GroupVersion.WithKind(kind)]; !ok {
			return nil, fmt.Errorf("embedded CRDs do not define %s %s", v1alpha1.GroupVersion, kind)
		}
	}
	return out, nil
}

func newCRDSchema(gvk schema.GroupVersionKind, v1 *apiextensionsv1.JSONSchemaProps) (*crdSchema, error) {
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v1, internal, nil); err != nil {
		return nil, fmt.Errorf("converting schema: %w", err)
	}
	ss, err := structuralschema.NewStructural(internal)
	if err != nil {
		return nil, fmt.Errorf("structural schema: %w", err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(internal)
	if err != nil {
		return nil, fmt.Errorf("schema validator: %w", err)
	}
	return &crdSchema{
		gvk:        gvk,
		structural: ss,
		validator:  validator,
		cel:        cel.NewValidator(ss, true, celconfig.PerCallLimit),
	}, nil
}

// admit does to obj what the API server does to a custom resource on
// create, in its order: unknown fields are refused (as with
// `kubectl apply --validate=strict`; the API server would prune them
// silently otherwise), defaults are applied, then metadata, the OpenAPI
// schema, list types and the x-kubernetes-validations CEL rules are
// checked. obj is changed in place.
// It returns the paths of unknown fields and the validation errors.
func (s *crdSchema) admit(ctx context.Context, obj map[string]any) (unknown []string, errs field.ErrorList) {
	unknown = pruning.PruneWithOptions(obj, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	defaulting.Default(obj, s.structural)

	errs = append(errs, validateMetadata(obj)...)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, s.validator)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, s.structural, obj)...)
	celErrs, _ := s.cel.Validate(ctx, nil, s.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	return unknown, errs
}

// validateMetadata checks metadata like the API server does for a
// namespaced custom resource: name a DNS subdomain, namespace set and valid,
// labels and annotations well-formed.
func validateMetadata(obj map[string]any) field.ErrorList {
	m, ok := obj["metadata"].(map[string]any)
	if !ok {
		return field.ErrorList{field.Required(field.NewPath("metadata"), "")}
	}
	var meta metav1.ObjectMeta
	raw, err := yaml.Marshal(m)
	if err == nil {
		err = yaml.UnmarshalStrict(raw, &meta)
	}
	if err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	return apimachineryvalidation.ValidateObjectMeta(&meta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
}
