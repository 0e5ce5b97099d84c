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

package v1alpha1

// Names of the annotations, labels, keys and finalizer that Secret-mode
// token issuance uses. They are part of the API: consumers read the keys,
// users set the renew annotation, and the operator recognises its own
// Secrets by the labels.
const (
	// AnnotationRenew on a ConnectionPolicy asks for a new token at once
	// whenever its value changes (any value: a timestamp is customary).
	// status.token.renewRequest records the value last acted on.
	AnnotationRenew = "sallyport.dev/renew"

	// FinalizerTokens is set on Secret-mode ConnectionPolicies so that
	// deleting one, or switching it away from Secret mode, revokes the
	// tokens it issued (deletes their anchor Secrets) and deletes the token
	// Secret, also where no garbage collector runs or the deletion orphans
	// dependents.
	FinalizerTokens = "policy.sallyport.dev/tokens"

	// LabelSecretRole marks the Secrets the operator creates; its value says
	// which kind (SecretRoleToken or SecretRoleAnchor). The operator never
	// writes or deletes a Secret without it.
	LabelSecretRole = "sallyport.dev/secret-role" //nolint:gosec // a label key, not a credential
	// SecretRoleToken is the Secret that holds a policy's current token.
	SecretRoleToken = "token"
	// SecretRoleAnchor is an empty Secret a token is bound to: deleting it
	// revokes the token.
	SecretRoleAnchor = "anchor"
	// LabelPolicyUID holds the UID of the ConnectionPolicy a Secret belongs
	// to (names may be longer than a label value allows).
	LabelPolicyUID = "sallyport.dev/policy-uid"

	// AnnotationPolicy on an operator's Secret names the ConnectionPolicy it
	// belongs to, for people reading it.
	AnnotationPolicy = "sallyport.dev/policy"
	// AnnotationAnchor on a token Secret names the anchor Secret its token is
	// bound to.
	AnnotationAnchor = "sallyport.dev/anchor"
	// AnnotationRequestedExpirationSeconds on a token Secret is the lifetime
	// its token was requested with.
	AnnotationRequestedExpirationSeconds = "sallyport.dev/requested-expiration-seconds"

	// TokenSecretKeyToken is the token Secret's key holding the token.
	TokenSecretKeyToken = "token"
	// TokenSecretKeyExpiresAt is the token Secret's key holding the token's
	// expiry, RFC 3339 in UTC.
	TokenSecretKeyExpiresAt = "expiresAt"

	// SecretTypeToken is the type of token Secrets.
	SecretTypeToken = "sallyport.dev/token" //nolint:gosec // a Secret type, not a credential
	// SecretTypeTokenAnchor is the type of anchor Secrets; they hold no data.
	SecretTypeTokenAnchor = "sallyport.dev/token-anchor" //nolint:gosec // a Secret type, not a credential

	// TokenIssuerClusterRole is the ClusterRole a namespace admin binds to the
	// operator, with a RoleBinding in the namespace, to delegate Secret mode.
	TokenIssuerClusterRole = "sallyport-token-issuer"
)
