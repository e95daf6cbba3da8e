package airlock.images_test

import data.airlock.images

grants := {
	"profiles": {
		"plain": {"tools": ["python", "search"]},
		"strict": {"tools": ["python", "search"], "image_scan": {"max_age_hours": 24}},
		"dbage": {"tools": ["python"], "image_scan": {"max_db_age_hours": 168}},
		"both": {"tools": ["python"], "image_scan": {"max_age_hours": 24, "max_db_age_hours": 168}},
	},
	"principals": {},
}

registry := {
	"python": {"name": "python", "image": "airlock/sandbox-python:4"},
	"search": {"name": "search", "image": ""},
	"other": {"name": "other", "image": "airlock/sandbox-python:4"},
}

digest := concat("", ["sha256:", concat("", [x | some _ in numbers.range(1, 64); x := "a"])])

ref := "airlock/sandbox-python:4"

scan(critical, scanned_at) := {
	"critical": critical, "high": 2, "medium": 3, "low": 4,
	"scanned_at": scanned_at, "db_updated_at": "2026-12-01T00:00:00Z",
}

pinned(s) := {"ref": ref, "digest": digest, "scan": s}

call(profile, tool, image) := {
	"principal": {"id": "agent", "profile": profile},
	"call": {"tool": tool},
	"image": image,
	"request": {"time": "2026-12-07T12:00:00.000000Z"},
}

codes := sort([r.code | some r in images.deny])

messages contains r.message if some r in images.deny

fresh := "2026-12-07T00:00:00Z"

old := "2026-11-01T00:00:00Z"

test_the_image_gate if {
	cases := [
		# A clean, fresh scan: nothing to say.
		{"profile": "strict", "image": pinned(scan(0, fresh)), "want": []},
		# Critical findings deny under any profile; high and below do not.
		{"profile": "plain", "image": pinned(scan(1, fresh)), "want": ["image_vulnerable"]},
		{"profile": "strict", "image": pinned(scan(3, fresh)), "want": ["image_vulnerable"]},
		# A profile without image_scan does not ask for a scan at all.
		{"profile": "plain", "image": pinned(null), "want": []},
		{"profile": "plain", "image": null, "want": []},
		# One that does: never scanned, not pinned, or too old is stale.
		{"profile": "strict", "image": pinned(null), "want": ["image_scan_stale"]},
		{"profile": "strict", "image": null, "want": ["image_scan_stale"]},
		{"profile": "strict", "image": pinned(scan(0, "2026-12-06T11:59:59Z")), "want": ["image_scan_stale"]},
		{"profile": "strict", "image": pinned(scan(0, "2026-12-06T12:00:00Z")), "want": []},
		{"profile": "strict", "image": pinned(scan(2, old)), "want": ["image_scan_stale", "image_vulnerable"]},
		# A corrupt scan time is never fresh.
		{"profile": "strict", "image": pinned(scan(0, "yesterday")), "want": ["image_scan_stale"]},
	]
	every c in cases {
		codes == c.want with input as call(c.profile, "python", c.image)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# A hosted tool runs no image, and an ungranted or unknown tool says nothing
# about images (tool_not_granted is the core's).
test_only_granted_tools_with_an_image_are_gated if {
	docs := [
		call("strict", "search", pinned(scan(5, old))),
		call("strict", "other", pinned(scan(5, old))),
		call("strict", "nope", null),
		call("nope", "python", null),
	]
	every doc in docs {
		codes == [] with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_messages_name_the_image_and_why if {
	needs := "profile \"strict\" needs a scan within 24 hours"
	cases := [
		{"image": pinned(scan(2, old)), "want": {
			sprintf(
				"image %s (%s) has 2 critical vulnerabilities (scan of %s, DB of 2026-12-01T00:00:00Z)",
				[ref, digest, old],
			),
			sprintf("image %s: the last scan was at %s; %s", [ref, old, needs]),
		}},
		{
			"image": pinned(null),
			"want": {sprintf("image %s: the image was never scanned (airlock images scan); %s", [ref, needs])},
		},
		{"image": null, "want": {sprintf("image %s: the image is not pinned (airlock images build); %s", [ref, needs])}},
	]
	every c in cases {
		messages == c.want with input as call("strict", "python", c.image)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Through the entry point: enforced by default, would_deny in shadow mode.
test_the_gate_in_the_decision_and_in_shadow_mode if {
	args := {"tool": "python", "item_type": "function_call", "arguments": {}, "arguments_errors": [], "session_id": ""}
	doc := object.union(call("default", "python", pinned(scan(1, fresh))), {"call": args})
	entry := {
		"name": "python", "item_type": "function_call", "image": ref,
		"allowed_network": false, "egress_allowlist": [], "limits": {},
	}
	enforced := data.airlock.decision with input as doc with data.registry.tools as {"python": entry}
	not enforced.allow
	[r.code | some r in enforced.reasons] == ["image_vulnerable"]
	every shadow in [{"codes": ["image_vulnerable"]}, {"packages": ["airlock.images"]}] {
		shadowed := data.airlock.decision with input as doc
			with data.registry.tools as {"python": entry}
			with data.airlock.config.shadow as shadow
		shadowed.allow
		[r.code | some r in shadowed.shadow] == ["image_vulnerable"]
	}
}

other_digest := concat("", ["sha256:", concat("", [x | some _ in numbers.range(1, 64); x := "b"])])

db_scan(db_updated_at) := object.union(scan(0, fresh), {"db_updated_at": db_updated_at})

# The vulnerability DB's age, for a profile that sets max_db_age_hours.
test_a_scan_against_an_old_db_is_stale if {
	cases := [
		# DB of 2026-12-01, the call on 2026-12-07 12:00: 156 hours.
		{"profile": "dbage", "image": pinned(scan(0, old)), "want": []},
		{"profile": "dbage", "image": pinned(db_scan("2026-11-30T12:00:00Z")), "want": []},
		{"profile": "dbage", "image": pinned(db_scan("2026-11-30T11:59:59Z")), "want": ["image_scan_stale"]},
		{"profile": "dbage", "image": pinned(db_scan("last week")), "want": ["image_scan_stale"]},
		{"profile": "dbage", "image": pinned(null), "want": ["image_scan_stale"]},
		{"profile": "dbage", "image": null, "want": ["image_scan_stale"]},
		# Both limits: one reason, whichever is broken.
		{"profile": "both", "image": pinned(db_scan("2026-11-01T00:00:00Z")), "want": ["image_scan_stale"]},
		{"profile": "both", "image": pinned(scan(0, old)), "want": ["image_scan_stale"]},
		{"profile": "both", "image": pinned(scan(0, fresh)), "want": []},
	]
	every c in cases {
		codes == c.want with input as call(c.profile, "python", c.image)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_stale_messages_say_what_is_old if {
	db_old := object.union(scan(0, old), {"db_updated_at": "2026-11-01T00:00:00Z"})
	db_is := "the scan's vulnerability DB is of 2026-11-01T00:00:00Z"
	db_needs := "a vulnerability DB at most 168 hours old"
	cases := [
		{"profile": "dbage", "image": pinned(db_old), "want": {concat("", [
			sprintf("image %s: %s; ", [ref, db_is]),
			sprintf("profile \"dbage\" needs %s", [db_needs]),
		])}},
		{"profile": "both", "image": pinned(db_old), "want": {concat("", [
			sprintf("image %s: the last scan was at %s; %s; ", [ref, old, db_is]),
			sprintf("profile \"both\" needs a scan within 24 hours and %s", [db_needs]),
		])}},
		{"profile": "both", "image": pinned(null), "want": {concat("", [
			sprintf("image %s: the image was never scanned (airlock images scan); ", [ref]),
			sprintf("profile \"both\" needs a scan within 24 hours and %s", [db_needs]),
		])}},
	]
	every c in cases {
		messages == c.want with input as call(c.profile, "python", c.image)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Counts by severity that are not integers >= 0 deny under any profile: a
# null critical count must never read as "no critical findings".
test_a_scan_with_ill_typed_counts_is_invalid if {
	bad := [
		object.union(scan(0, fresh), {"critical": null}),
		object.union(scan(0, fresh), {"critical": "3"}),
		object.union(scan(0, fresh), {"high": -1}),
		object.union(scan(0, fresh), {"low": 1.5}),
		object.remove(scan(0, fresh), ["medium"]),
		"clean",
	]
	every s in bad {
		codes == ["image_scan_invalid"] with input as call("plain", "python", pinned(s))
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
	want := sprintf(
		"image %s: its scan's critical, low count is not an integer >= 0, so it cannot say what it found %s",
		[ref, "(airlock images scan)"],
	)
	two_bad := object.union(scan(0, fresh), {"critical": null, "low": false})
	messages == {want} with input as call("plain", "python", pinned(two_bad))
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

# When the signed bundle carries pins (data.images), the gateway's unsigned
# copy must agree on the digest, and the scan judged is the bundle's.
test_the_signed_pins_win_over_the_gateways_copy if {
	signed := {ref: {"digest": digest, "size": 1, "scan": scan(0, fresh)}}
	elsewhere := {"other:1": {"digest": digest, "scan": null}}
	found := {ref: {"digest": digest, "scan": scan(2, fresh)}}
	repinned := {"ref": ref, "digest": other_digest, "scan": scan(0, fresh)}
	cases := [
		{"signed": signed, "image": pinned(scan(0, fresh)), "want": []},
		# Another digest, or none: the executor would be sent something else.
		{"signed": signed, "image": repinned, "want": ["image_pin_mismatch"]},
		{"signed": signed, "image": null, "want": ["image_pin_mismatch"]},
		# The bundle pins other images only: the gateway's pin is not signed.
		{"signed": elsewhere, "image": pinned(scan(0, fresh)), "want": ["image_pin_mismatch"]},
		{"signed": elsewhere, "image": null, "want": []},
		# A copy that hides the bundle's finding does not hide it.
		{"signed": found, "image": pinned(scan(0, fresh)), "want": ["image_vulnerable"]},
		# No pins in the bundle: the gateway's copy is all there is.
		{"signed": {}, "image": pinned(scan(2, fresh)), "want": ["image_vulnerable"]},
	]
	every c in cases {
		codes == c.want with input as call("plain", "python", c.image)
			with data.airlock.grants as grants
			with data.registry.tools as registry
			with data.images as c.signed
	}
	want := sprintf(
		"image %s: the gateway's pin (none) is not the signed bundle's (%s); publish the pins again (airlock policy publish)",
		[ref, digest],
	)
	messages == {want} with input as call("plain", "python", null)
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with data.images as signed
}
