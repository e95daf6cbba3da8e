# Artifacts: whether a principal may do one operation on the gateway's
# artifact store. The gateway asks data.airlock.artifacts.decision for every
# ArtifactService call (put, get, stat, list, delete) and for every artifact a
# tool call names as input or stores as output; it has already scoped the
# store by the authenticated principal, so an artifact reaching this policy is
# the caller's own (another principal's does not exist: artifact_not_found).
#
# Sessions: an artifact put with a session belongs to that session; one put
# without a session is shared by all of the principal's sessions. A call in
# session S may take as input its own session's artifacts and the shared ones.
#
# Per profile, grants data may narrow what artifacts may be used for:
#   profiles.<p>.artifacts.operations          - the operations allowed
#                                                (absent: all of them)
#   profiles.<p>.artifacts.max_artifact_bytes  - the largest artifact a put
#                                                or output may store (absent:
#                                                only the gateway's quota)
# The input document: input.operation, input.principal {id, profile},
# input.session (the calling session, "" for none), input.artifact {id, name,
# size, session, media_type, principal} (absent for list) and input.list
# {session, prefix, shared_only}.
package airlock.artifacts

operations := {"put", "get", "stat", "list", "delete", "input", "output"}

default operation := ""

operation := input.operation if is_string(input.operation)

default principal_id := ""

principal_id := input.principal.id if is_string(input.principal.id)

default profile_name := ""

profile_name := input.principal.profile if is_string(input.principal.profile)

default session := ""

session := input.session if is_string(input.session)

default artifact := {}

artifact := input.artifact if is_object(input.artifact)

default artifact_session := ""

artifact_session := artifact.session if is_string(artifact.session)

known_profile if data.airlock.grants.profiles[profile_name]

default grant := {}

grant := g if {
	g := data.airlock.grants.profiles[profile_name].artifacts
	is_object(g)
}

granted contains op if {
	known_profile
	some op in object.get(grant, "operations", operations)
	op in operations
}

deny contains {"code": "artifact_operation_unknown", "message": msg} if {
	not operation in operations
	msg := sprintf("%q is not an artifact operation", [operation])
}

deny contains {"code": "unknown_profile", "message": msg} if {
	not known_profile
	msg := sprintf("principal %q has no known profile", [principal_id])
}

deny contains {"code": "artifact_operation_not_granted", "message": msg} if {
	operation in operations
	known_profile
	not operation in granted
	msg := sprintf("profile %q may not %s artifacts", [profile_name, operation])
}

# The gateway never shows this policy another principal's artifact; if it
# ever did, the answer is the same as for an id that does not exist.
deny contains {"code": "artifact_not_found", "message": "no such artifact"} if {
	is_string(artifact.principal)
	artifact.principal != principal_id
}

# A call in one session cannot read another session's artifacts.
deny contains {"code": "artifact_session_denied", "message": msg} if {
	operation == "input"
	not artifact_session in {"", session}
	msg := sprintf(
		"artifact %q belongs to another session; a call may use its own session's and shared artifacts",
		[object.get(artifact, "name", "")],
	)
}

deny contains {"code": "artifact_size_denied", "message": msg} if {
	operation in {"put", "output"}
	is_number(grant.max_artifact_bytes)
	is_number(artifact.size)
	artifact.size > grant.max_artifact_bytes
	msg := sprintf(
		"%v bytes is over profile %q's %v-byte artifact limit",
		[artifact.size, profile_name, grant.max_artifact_bytes],
	)
}

default allow := false

allow if count(deny) == 0

default reasons := [{"code": "allowed", "message": "artifact operation allowed"}]

reasons := [{"code": d.code, "message": d.message} | some d in deny] if count(deny) > 0

# METADATA
# title: Artifact decision
# description: |
#   Whether the principal may do this artifact operation, and why.
#   Always defined: the gateway must never have to guess what "no answer" means.
# entrypoint: true
decision := {"allow": allow, "reasons": reasons}
