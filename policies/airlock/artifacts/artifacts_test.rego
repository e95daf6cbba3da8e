package airlock.artifacts_test

import data.airlock.artifacts

grants := {"profiles": {
	"default": {"tools": ["python"]},
	"reader": {"tools": [], "artifacts": {"operations": ["get", "stat", "list", "input"]}},
	"small": {"tools": [], "artifacts": {"max_artifact_bytes": 100}},
}}

req(op, profile, sess, art) := {
	"operation": op,
	"principal": {"id": "agent", "profile": profile},
	"session": sess,
	"artifact": art,
}

codes(d) := {r.code | some r in d.reasons}

own(sess) := {"id": "art_1", "name": "a.csv", "size": 10, "session": sess, "principal": "agent"}

sized(n) := {"name": "a", "size": n}

test_default_profile_may_do_everything if {
	every op in artifacts.operations {
		inp := req(op, "default", "", own(""))
		artifacts.decision.allow with input as inp with data.airlock.grants as grants
	}
}

test_allowed_has_a_reason if {
	d := artifacts.decision with input as req("get", "default", "", own("")) with data.airlock.grants as grants
	d.reasons == [{"code": "allowed", "message": "artifact operation allowed"}]
}

test_unknown_operation_denied if {
	d := artifacts.decision with input as req("chmod", "default", "", own("")) with data.airlock.grants as grants
	not d.allow
	codes(d) == {"artifact_operation_unknown"}
}

test_missing_operation_denied if {
	d := artifacts.decision with input as {"principal": {"id": "agent", "profile": "default"}}
		with data.airlock.grants as grants
	not d.allow
	"artifact_operation_unknown" in codes(d)
}

test_unknown_profile_denied if {
	d := artifacts.decision with input as req("get", "nobody", "", own("")) with data.airlock.grants as grants
	not d.allow
	codes(d) == {"unknown_profile"}
}

test_profile_narrows_operations if {
	artifacts.decision.allow with input as req("get", "reader", "", own("")) with data.airlock.grants as grants
	artifacts.decision.allow with input as req("input", "reader", "s1", own("s1")) with data.airlock.grants as grants
	every op in {"put", "delete", "output"} {
		d := artifacts.decision with input as req(op, "reader", "", own("")) with data.airlock.grants as grants
		not d.allow
		codes(d) == {"artifact_operation_not_granted"}
	}
}

test_other_principals_artifact_is_not_found if {
	inp := req("get", "default", "", {"id": "art_1", "name": "x", "principal": "someone-else"})
	d := artifacts.decision with input as inp with data.airlock.grants as grants
	not d.allow
	codes(d) == {"artifact_not_found"}
}

test_session_sees_own_and_shared if {
	artifacts.decision.allow with input as req("input", "default", "s1", own("s1")) with data.airlock.grants as grants
	artifacts.decision.allow with input as req("input", "default", "s1", own("")) with data.airlock.grants as grants
	d := artifacts.decision with input as req("input", "default", "s1", own("s2")) with data.airlock.grants as grants
	not d.allow
	codes(d) == {"artifact_session_denied"}

	# Without a session, a call sees only shared artifacts.
	not artifacts.decision.allow with input as req("input", "default", "", own("s2")) with data.airlock.grants as grants
}

test_api_reads_any_own_session if {
	artifacts.decision.allow with input as req("get", "default", "", own("s2")) with data.airlock.grants as grants
	artifacts.decision.allow with input as req("delete", "default", "", own("s2")) with data.airlock.grants as grants
}

test_profile_size_limit if {
	artifacts.decision.allow with input as req("put", "small", "", sized(100)) with data.airlock.grants as grants
	d := artifacts.decision with input as req("put", "small", "", sized(101)) with data.airlock.grants as grants
	not d.allow
	codes(d) == {"artifact_size_denied"}
	not artifacts.decision.allow with input as req("output", "small", "s", sized(101)) with data.airlock.grants as grants

	# Reads are not capped by the put limit.
	big := object.union(sized(1000), {"principal": "agent"})
	artifacts.decision.allow with input as req("get", "small", "", big) with data.airlock.grants as grants
}

test_list_without_artifact if {
	d := artifacts.decision with input as {
		"operation": "list",
		"principal": {"id": "agent", "profile": "default"},
		"list": {"session": "s1", "prefix": ""},
	}
		with data.airlock.grants as grants
	d.allow
}

test_malformed_input_denies if {
	d := artifacts.decision with input as {"operation": 7, "principal": "agent", "artifact": "x"}
		with data.airlock.grants as grants
	not d.allow
	codes(d) == {"artifact_operation_unknown", "unknown_profile"}
}
