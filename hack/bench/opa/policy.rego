# The benchmark's policy for OPA: the same decisions as sallyport's engine
# over the same /v1/decide body and the same policies (hack/bench/decide
# -opa-dir writes them as data.bench), written the way an OPA user would.
# See docs/benchmarks.md, "OPA".
#
# Two entry points, both answering in the shape of sallyport's decision
# (allowed, connection and resource gates with sallyport's reason codes):
#
#   POST /v1/data/sallyport/verified    checks the credential: the token's
#       RS256 signature against the issuer's key (data.bench.jwks), its
#       issuer, audience and validity period, with io.jwt.decode_verify on
#       every request (OPA keeps no cache of verified tokens by default).
#   POST /v1/data/sallyport/unverified  no credential check: the claims are
#       read with io.jwt.decode and trusted; policy evaluation alone.
#
# Then, as sallyport's engine does: the token's audience picks the
# ConnectionPolicy; identity, lifetime, reach (class, scopes,
# classification) and the connection's condition decide the connection
# gate; the namespace and service pick the ResourcePolicy, whose Deny rules
# are tried first and Allow rules in order, each by action, scopes,
# resource glob and connection, and then its condition. The conditions are
# sallyport's CEL conditions in Rego (hack/bench/decide/fixture.go):
#
#   connection.age < duration("1h")
#       time.now_ns() - iat < maxAgeSeconds
#   !("sourceIP" in request.attributes) || request.attributes["sourceIP"].startsWith("10.")
#       no sourceIP attribute, or one starting with sourceIPPrefix
#
# Not reproduced, because the benchmark's request never needs them: path
# canonicalisation (the path is already canonical), host lookup,
# namespace-label connection selectors, and the messages.
package sallyport

# The audience picks the connection, before any verification, as in
# sallyport (peekAudience): a token for an audience no policy holds is
# refused without checking it.
unverified_claims := io.jwt.decode(input.credential.token)[1]

audience := unverified_claims.aud if is_string(unverified_claims.aud)

audience := unverified_claims.aud[0] if is_array(unverified_claims.aud)

conn := data.bench.connections[audience]

verified_claims := claims if {
	[valid, _, claims] := io.jwt.decode_verify(input.credential.token, {
		"cert": data.bench.jwks,
		"iss": data.bench.issuer,
		"aud": audience,
	})
	valid
}

res := data.bench.resources[input.resource.namespace][input.resource.service]

scopes := object.get(input, "scopes", [])

attributes := object.get(input, "attributes", {})

verified := decide(verified_claims) if conn

else := denied("InvalidCredential") if conn

else := denied("NoConnectionPolicy")

unverified := decide(unverified_claims) if conn

else := denied("NoConnectionPolicy")

denied(reason) := {
	"allowed": false,
	"connection": {"allowed": false, "reason": reason},
	"resource": {"allowed": false, "reason": "NotEvaluated"},
}

decide(claims) := d if {
	c := connection_gate(claims)
	c.allowed
	r := resource_gate
	d := {"allowed": r.allowed, "connection": c, "resource": r}
} else := {
	"allowed": false,
	"connection": connection_gate(claims),
	"resource": {"allowed": false, "reason": "NotEvaluated"},
}

connection_gate(claims) := {
	"allowed": reason == "Matched",
	"policy": conn.policy,
	"identity": claims.sub,
	"credentialID": sprintf("JTI=%s", [claims.jti]),
	"reason": reason,
} if {
	reason := connection_reason(claims)
}

# The connection gate's checks, in sallyport's order; the first that fails
# gives the reason.
connection_reason(claims) := "InvalidCredential" if {
	time.now_ns() >= claims.exp * 1000000000
} else := "InvalidCredential" if {
	claims.sub != conn.identity
} else := "TokenLifetimeExceeded" if {
	claims.exp - claims.iat > conn.maxTokenLifetimeSeconds
} else := "ClassNotReachable" if {
	not conn.reach[res.class]
} else := "ScopeNotReachable" if {
	some s in scopes
	not s in conn.reach[res.class].scopes
} else := "ClassificationNotReachable" if {
	res.classification > conn.reach[res.class].maxClassification
} else := "ConditionFalse" if {
	time.now_ns() - (claims.iat * 1000000000) >= conn.maxAgeSeconds * 1000000000
} else := "Matched"

resource_gate := {"allowed": false, "policy": res.policy, "rule": deny_rules[0], "reason": "DeniedByRule"} if {
	count(deny_rules) > 0
} else := {"allowed": true, "policy": res.policy, "rule": allow_rules[0], "reason": "Matched"} if {
	count(allow_rules) > 0
} else := {"allowed": false, "policy": res.policy, "reason": "NoRuleMatched"} if {
	res
} else := {"allowed": false, "reason": "NoResourcePolicy"}

# The names of the matching rules, in their order.
deny_rules := [r.name | some r in res.deny; deny_applies(r); rule_when(r)]

allow_rules := [r.name | some r in res.allow; allow_applies(r); rule_when(r)]

# A Deny rule matches a request carrying any of its scopes, or any request
# when it has none; it applies to every connection unless it names some.
deny_applies(r) if {
	input.action in r.actions
	deny_scopes(r)
	path_matches(r)
	deny_connection(r)
}

deny_scopes(r) if count(r.scopes) == 0

deny_scopes(r) if {
	some s in scopes
	s in r.scopes
}

deny_connection(r) if count(r.connections) == 0

deny_connection(r) if conn.policy in r.connections

# An Allow rule matches when every requested scope is among its scopes and
# it names the connection.
allow_applies(r) if {
	input.action in r.actions
	every s in scopes {
		s in r.scopes
	}
	path_matches(r)
	conn.policy in r.connections
}

# "*" matches one path segment, "**" any number, as in sallyport.
path_matches(r) if {
	some p in r.resources
	glob.match(p, ["/"], input.resource.name)
}

rule_when(r) if not r.sourceIPPrefix

rule_when(r) if not attributes.sourceIP

rule_when(r) if startswith(attributes.sourceIP, r.sourceIPPrefix)
