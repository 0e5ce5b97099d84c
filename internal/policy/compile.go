package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/pathpattern"
)

// Defaults the API server applies through the CRD schema. Compilation applies
// them too, so an object that never passed the API server (a file in a
// repository, an object stored before a default existed) means the same.
const (
	DefaultMaxTokenLifetime  = time.Hour
	MinMaxTokenLifetime      = 10 * time.Minute
	MaxMaxTokenLifetime      = 48 * time.Hour
	DefaultExpirationSeconds = 900
	MinExpirationSeconds     = 600
	// legacyTokenExpirationSeconds is the value the API server reads as a
	// request for an extended legacy token.
	legacyTokenExpirationSeconds = 3607
	// DefaultAudiencePrefix starts every default audience.
	DefaultAudiencePrefix = "sallyport.dev/"
)

// WellKnownAPIAudiences are audiences a Kubernetes API server accepts under
// common configurations. A ConnectionPolicy may not claim them: a token for
// such an audience is also a credential for the API server, and a service
// that receives it could replay it there.
var WellKnownAPIAudiences = []string{
	"https://kubernetes.default.svc",
	"https://kubernetes.default.svc.cluster.local",
	"kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
	"kubernetes",
}

// DefaultAudience is the audience of a ConnectionPolicy that sets none.
func DefaultAudience(namespace, name string) string {
	return DefaultAudiencePrefix + namespace + "/" + name
}

// EffectiveAudience is spec.audience, or the default.
func EffectiveAudience(cp *v1alpha1.ConnectionPolicy) string {
	if cp.Spec.Audience != "" {
		return cp.Spec.Audience
	}
	return DefaultAudience(cp.Namespace, cp.Name)
}

// Identity is the user name the API server gives a ServiceAccount.
func Identity(namespace, serviceAccount string) string {
	return "system:serviceaccount:" + namespace + ":" + serviceAccount
}

// Compiler compiles policies. It is safe for concurrent use.
type Compiler struct {
	exprs        *expr.Compiler
	apiAudiences []string
}

// CompilerOptions configure a Compiler.
type CompilerOptions struct {
	// Limits bound the cost of expressions; zero means expr.DefaultLimits.
	Limits expr.Limits
	// APIAudiences are the API server's own audiences, discovered or
	// configured, refused in addition to WellKnownAPIAudiences.
	APIAudiences []string
}

// NewCompiler returns a compiler.
func NewCompiler(o CompilerOptions) *Compiler {
	if o.Limits == (expr.Limits{}) {
		o.Limits = expr.DefaultLimits
	}
	aud := make([]string, 0, len(WellKnownAPIAudiences)+len(o.APIAudiences))
	for _, a := range slices.Concat(WellKnownAPIAudiences, o.APIAudiences) {
		if a = normalizeAudience(a); a != "" && !slices.Contains(aud, a) {
			aud = append(aud, a)
		}
	}
	return &Compiler{exprs: expr.NewCompiler(o.Limits), apiAudiences: aud}
}

func normalizeAudience(a string) string { return strings.TrimSuffix(strings.TrimSpace(a), "/") }

// InvalidError is every problem found in one policy, each naming its field.
type InvalidError struct {
	Kind string
	Ref  types.NamespacedName
	Errs field.ErrorList
}

// Error lists the problems, one per line.
func (e *InvalidError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		msgs[i] = fe.Error()
	}
	return strings.Join(msgs, "\n")
}

func meta(obj metav1.Object, enforcement v1alpha1.Enforcement) Meta {
	if enforcement == "" {
		enforcement = v1alpha1.EnforcementEnforce
	}
	var shadowed *ShadowUsage
	if enforcement == v1alpha1.EnforcementDryRun {
		shadowed = &ShadowUsage{}
	}
	return Meta{
		Shadowed:    shadowed,
		Ref:         types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()},
		Name:        obj.GetNamespace() + "/" + obj.GetName(),
		UID:         obj.GetUID(),
		Generation:  obj.GetGeneration(),
		Created:     obj.GetCreationTimestamp().Time,
		Labels:      labels.Set(obj.GetLabels()),
		Enforcement: enforcement,
	}
}

func checkEnforcement(e v1alpha1.Enforcement, p *field.Path) field.ErrorList {
	switch e {
	case "", v1alpha1.EnforcementEnforce, v1alpha1.EnforcementDryRun:
		return nil
	}
	return field.ErrorList{field.NotSupported(p, e, []string{string(v1alpha1.EnforcementEnforce), string(v1alpha1.EnforcementDryRun)})}
}

// compileWhen compiles an optional condition and adds it to the summary.
func (c *Compiler) compileWhen(src v1alpha1.Expression, scope expr.Scope, p *field.Path, what string, sum *Summary) (*expr.Program, *field.Error) {
	if src == "" {
		return nil, nil
	}
	prg, err := c.exprs.Compile(string(src), scope, p.String())
	if err != nil {
		var ce *expr.CompileError
		if errors.As(err, &ce) {
			return nil, field.Invalid(p, string(src), what+ce.Detail())
		}
		return nil, field.InternalError(p, err)
	}
	sum.Expressions++
	sum.EstimatedCost += prg.EstimatedCost()
	return prg, nil
}

// CompileConnection validates and compiles a ConnectionPolicy. The error, if
// any, is an *InvalidError listing every problem with its field.
func (c *Compiler) CompileConnection(cp *v1alpha1.ConnectionPolicy) (*Connection, error) {
	spec := &cp.Spec
	sp := field.NewPath("spec")
	var errs field.ErrorList
	out := &Connection{
		Meta:           meta(cp, spec.Enforcement),
		ServiceAccount: spec.ServiceAccountName,
		Identity:       Identity(cp.Namespace, spec.ServiceAccountName),
		Audience:       EffectiveAudience(cp),
		Reach:          make(map[string]*Reach, len(spec.Reach)),
	}
	errs = append(errs, checkEnforcement(spec.Enforcement, sp.Child("enforcement"))...)
	if spec.ServiceAccountName == "" {
		errs = append(errs, field.Required(sp.Child("serviceAccountName"), "the workload identity is required"))
	}
	errs = append(errs, c.checkAudience(cp, sp.Child("audience"))...)

	out.MaxTokenLifetime = spec.MaxTokenLifetime.Duration
	if out.MaxTokenLifetime == 0 {
		out.MaxTokenLifetime = DefaultMaxTokenLifetime
	}
	if out.MaxTokenLifetime < MinMaxTokenLifetime || out.MaxTokenLifetime > MaxMaxTokenLifetime {
		errs = append(errs, field.Invalid(sp.Child("maxTokenLifetime"), spec.MaxTokenLifetime.Duration.String(),
			fmt.Sprintf("must be between %s and %s", MinMaxTokenLifetime, MaxMaxTokenLifetime)))
	}

	for i := range spec.Reach {
		r := &spec.Reach[i]
		rp := sp.Child("reach").Index(i)
		if r.Class == "" {
			errs = append(errs, field.Required(rp.Child("class"), ""))
		} else if _, dup := out.Reach[string(r.Class)]; dup {
			errs = append(errs, field.Duplicate(rp.Child("class"), r.Class))
			continue
		}
		reach := &Reach{Class: string(r.Class), MaxClassification: LevelInternal, Usage: NewUsage(time.Now())}
		if r.MaxClassification != "" {
			if reach.MaxClassification = ParseLevel(r.MaxClassification); reach.MaxClassification == LevelUnknown {
				errs = append(errs, field.NotSupported(rp.Child("maxClassification"), r.MaxClassification, classificationNames))
			}
		}
		for _, s := range r.Scopes {
			if s == "*" {
				reach.AnyScope = true
				continue
			}
			reach.Scopes = append(reach.Scopes, string(s))
		}
		slices.Sort(reach.Scopes)
		reach.Scopes = slices.Compact(reach.Scopes)
		out.Reach[reach.Class] = reach
	}
	out.Summary.Rules = len(spec.Reach)

	var fe *field.Error
	if out.When, fe = c.compileWhen(spec.When, expr.ConnectionScope, sp.Child("when"), "", &out.Summary); fe != nil {
		errs = append(errs, fe)
	}

	if t := spec.Token; t != nil {
		tp := sp.Child("token")
		out.Token = &Token{Mode: t.Mode, SecretName: t.SecretName, ExpirationSeconds: DefaultExpirationSeconds}
		switch t.Mode {
		case v1alpha1.TokenModeProjected:
			if t.SecretName != "" {
				errs = append(errs, field.Forbidden(tp.Child("secretName"), "only valid with mode Secret"))
			}
		case v1alpha1.TokenModeSecret:
			if out.Token.SecretName == "" {
				out.Token.SecretName = cp.Name + "-token"
			}
		default:
			errs = append(errs, field.NotSupported(tp.Child("mode"), t.Mode, []string{string(v1alpha1.TokenModeProjected), string(v1alpha1.TokenModeSecret)}))
		}
		if t.ExpirationSeconds != nil {
			out.Token.ExpirationSeconds = *t.ExpirationSeconds
		}
		ep := tp.Child("expirationSeconds")
		switch es := out.Token.ExpirationSeconds; {
		case es < MinExpirationSeconds:
			errs = append(errs, field.Invalid(ep, es, fmt.Sprintf("must be at least %d, the API server's floor", MinExpirationSeconds)))
		case es > int64(out.MaxTokenLifetime/time.Second):
			// Compared in seconds: es*time.Second overflows for large es.
			errs = append(errs, field.Invalid(ep, es, fmt.Sprintf("may not exceed maxTokenLifetime (%s)", out.MaxTokenLifetime)))
		case es == legacyTokenExpirationSeconds:
			errs = append(errs, field.Invalid(ep, es, "3607 is reserved by the API server for extended legacy tokens; use 3600 or 3608"))
		}
	}

	if len(errs) > 0 {
		return nil, &InvalidError{Kind: "ConnectionPolicy", Ref: out.Ref, Errs: errs}
	}
	return out, nil
}

var classificationNames = []string{
	string(v1alpha1.ClassificationPublic), string(v1alpha1.ClassificationInternal),
	string(v1alpha1.ClassificationConfidential), string(v1alpha1.ClassificationRestricted),
}

// checkAudience refuses the API server's audiences and another policy's
// default audience, which would let one namespace take a connection's
// audience from another.
func (c *Compiler) checkAudience(cp *v1alpha1.ConnectionPolicy, p *field.Path) field.ErrorList {
	aud := cp.Spec.Audience
	if aud == "" {
		return nil
	}
	n := normalizeAudience(aud)
	if slices.Contains(c.apiAudiences, n) {
		return field.ErrorList{field.Forbidden(p, fmt.Sprintf("%q is an audience of the Kubernetes API server; a token for it would also be an API credential", aud))}
	}
	if strings.HasPrefix(aud, DefaultAudiencePrefix) && aud != DefaultAudience(cp.Namespace, cp.Name) {
		return field.ErrorList{field.Forbidden(p, fmt.Sprintf("audiences under %q are reserved for defaults; this policy's default is %q (leave audience empty to use it)",
			DefaultAudiencePrefix, DefaultAudience(cp.Namespace, cp.Name)))}
	}
	return nil
}

// CompileResource validates and compiles a ResourcePolicy. The error, if
// any, is an *InvalidError listing every problem with its field.
func (c *Compiler) CompileResource(rp *v1alpha1.ResourcePolicy) (*Resource, error) {
	spec := &rp.Spec
	sp := field.NewPath("spec")
	var errs field.ErrorList
	out := &Resource{
		Meta:    meta(rp, spec.Enforcement),
		Service: spec.Service,
		Hosts:   slices.Clone(spec.Hosts),
		Class:   string(spec.Class),
	}
	errs = append(errs, checkEnforcement(spec.Enforcement, sp.Child("enforcement"))...)
	if spec.Service == "" {
		errs = append(errs, field.Required(sp.Child("service"), ""))
	}
	if spec.Class == "" {
		errs = append(errs, field.Required(sp.Child("class"), ""))
	}
	if out.Classification = ParseLevel(spec.Classification); out.Classification == LevelUnknown {
		errs = append(errs, field.NotSupported(sp.Child("classification"), spec.Classification, classificationNames))
	}
	for i, h := range spec.Hosts {
		if h == "" || h != strings.ToLower(h) {
			errs = append(errs, field.Invalid(sp.Child("hosts").Index(i), h, "must be a lower-case host name"))
		}
	}

	names := make(map[string]int, len(spec.Rules))
	for i := range spec.Rules {
		rule, ruleErrs := c.compileRule(rp, i, sp.Child("rules").Index(i), &out.Summary)
		if prev, dup := names[rule.Name]; dup {
			ruleErrs = append(ruleErrs, field.Duplicate(sp.Child("rules").Index(i).Child("name"), fmt.Sprintf("%s (also rules[%d])", rule.Name, prev)))
		}
		names[rule.Name] = i
		errs = append(errs, ruleErrs...)
		if rule.Effect == v1alpha1.EffectDeny {
			out.Deny = append(out.Deny, rule)
		} else {
			out.Allow = append(out.Allow, rule)
		}
	}
	out.Summary.Rules = len(spec.Rules)

	if len(errs) > 0 {
		return nil, &InvalidError{Kind: "ResourcePolicy", Ref: out.Ref, Errs: errs}
	}
	return out, nil
}

func (c *Compiler) compileRule(rp *v1alpha1.ResourcePolicy, i int, p *field.Path, sum *Summary) (*Rule, field.ErrorList) {
	in := &rp.Spec.Rules[i]
	var errs field.ErrorList
	out := &Rule{Name: in.Name, Index: i, Effect: in.Effect, Usage: NewUsage(time.Now())}
	if in.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	what := fmt.Sprintf("rule %q: ", in.Name)
	switch in.Effect {
	case v1alpha1.EffectAllow, v1alpha1.EffectDeny:
	default:
		errs = append(errs, field.NotSupported(p.Child("effect"), in.Effect, []string{string(v1alpha1.EffectAllow), string(v1alpha1.EffectDeny)}))
	}

	if len(in.Actions) == 0 {
		errs = append(errs, field.Required(p.Child("actions"), what+`at least one action; "*" is any`))
	}
	for j, a := range in.Actions {
		switch {
		case a == "*":
			out.AnyAction = true
		case a == "" || strings.ContainsAny(a, "* \t"):
			errs = append(errs, field.Invalid(p.Child("actions").Index(j), a, what+`an action is an exact method or verb, or "*" alone`))
		default:
			out.Actions = append(out.Actions, a)
		}
	}
	slices.Sort(out.Actions)
	out.Actions = slices.Compact(out.Actions)

	if len(in.Resources) == 0 {
		errs = append(errs, field.Required(p.Child("resources"), what+`at least one pattern; "/**" is every object`))
	}
	for j, r := range in.Resources {
		pat, err := pathpattern.Compile(r)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("resources").Index(j), r, what+err.Error()))
			continue
		}
		out.Resources = append(out.Resources, pat)
	}

	for _, s := range in.Scopes {
		out.Scopes = append(out.Scopes, string(s))
	}
	slices.Sort(out.Scopes)
	out.Scopes = slices.Compact(out.Scopes)

	if in.Effect == v1alpha1.EffectAllow && len(in.Connections) == 0 {
		errs = append(errs, field.Required(p.Child("connections"), what+"an Allow rule must name at least one connection, so the resource owner chooses who gets in"))
	}
	for j := range in.Connections {
		sel, fe := compileSelector(&in.Connections[j], rp.Namespace, p.Child("connections").Index(j), what)
		errs = append(errs, fe...)
		out.Connections = append(out.Connections, sel)
	}

	var fe *field.Error
	if out.When, fe = c.compileWhen(in.When, expr.RuleScope, p.Child("when"), what, sum); fe != nil {
		errs = append(errs, fe)
	}
	return out, errs
}

func compileSelector(in *v1alpha1.ConnectionRef, ownNamespace string, p *field.Path, what string) (ConnectionSelector, field.ErrorList) {
	out := ConnectionSelector{OwnNamespace: ownNamespace}
	byName := in.Name != ""
	bySelector := in.NamespaceSelector != nil || in.PolicySelector != nil
	switch {
	case byName && bySelector:
		return out, field.ErrorList{field.Invalid(p, "name and selectors", what+"set either name (with an optional namespace) or namespaceSelector/policySelector, not both")}
	case !byName && !bySelector:
		return out, field.ErrorList{field.Required(p, what+"set either name (with an optional namespace) or namespaceSelector/policySelector")}
	case byName:
		out.Name = types.NamespacedName{Namespace: in.Namespace, Name: in.Name}
		if out.Name.Namespace == "" {
			out.Name.Namespace = ownNamespace
		}
		return out, nil
	}
	var errs field.ErrorList
	if in.Namespace != "" {
		errs = append(errs, field.Forbidden(p.Child("namespace"), what+"namespace is only valid with name"))
	}
	if in.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(labelSelector(in.NamespaceSelector))
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("namespaceSelector"), in.NamespaceSelector, what+err.Error()))
		}
		out.NamespaceSelector = sel
	}
	out.PolicySelector = labels.Everything()
	if in.PolicySelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(labelSelector(in.PolicySelector))
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("policySelector"), in.PolicySelector, what+err.Error()))
		} else {
			out.PolicySelector = sel
		}
	}
	return out, errs
}

// labelSelector converts the API's bounded selector to the apimachinery one.
func labelSelector(in *v1alpha1.LabelSelector) *metav1.LabelSelector {
	out := &metav1.LabelSelector{}
	if len(in.MatchLabels) > 0 {
		out.MatchLabels = make(map[string]string, len(in.MatchLabels))
		for k, v := range in.MatchLabels {
			out.MatchLabels[k] = string(v)
		}
	}
	for _, r := range in.MatchExpressions {
		req := metav1.LabelSelectorRequirement{Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator)}
		for _, v := range r.Values {
			req.Values = append(req.Values, string(v))
		}
		out.MatchExpressions = append(out.MatchExpressions, req)
	}
	return out
}
