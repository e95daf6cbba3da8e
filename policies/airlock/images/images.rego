# Image gate: a tool runs only from an image the operator can vouch for. The
# gateway sends the tool image's pin and last Trivy scan as input.image
# (docs/images.md), read from a file beside its registry that nothing signs;
# the signed bundle carries the same as data.images. When the bundle carries
# pins they are what counts: the gateway's digest (the one the executor is
# told to run) must be the bundle's, and the scan judged is the bundle's.
#   - image_pin_mismatch: the bundle pins the tool's image to a digest and
#     input.image has another or none (or pins one the bundle does not);
#   - image_vulnerable: the scan found critical vulnerabilities;
#   - image_scan_invalid: a scan whose counts by severity are not integers
#     >= 0 (it cannot say what it found);
#   - image_scan_stale: the profile asks for scans (image_scan.max_age_hours
#     and/or max_db_age_hours in grants) and the image was never scanned, is
#     not pinned, was scanned longer ago than that, or against a
#     vulnerability DB older than that.
# All can be rolled out report-only in shadow mode (their package
# airlock.images, or their codes). Only a granted tool with an image is
# checked: a hosted tool runs nothing here.
package airlock.images

import data.airlock.tools

# The profile's scan requirements; absent: only the findings rules.
default gate := {}

gate := tools.profile.image_scan

runs_an_image if tools.entry.image != ""

# The signed pins ({} when the bundle carries none, e.g. built without them).
default signed := {}

signed := data.images if is_object(data.images)

bundle_pins if count(signed) > 0

# The pin and scan the gate judges: the bundle's when it carries pins, else
# the gateway's; null when the image is not pinned.
default facts := null

facts := object.get(signed, tools.entry.image, null) if bundle_pins

facts := input.image if not bundle_pins

default scan := null

scan := facts.scan

default sent_digest := ""

sent_digest := input.image.digest if is_string(input.image.digest)

default signed_digest := ""

signed_digest := signed[tools.entry.image].digest

deny contains {"code": "image_pin_mismatch", "message": msg, "package": "airlock.images"} if {
	runs_an_image
	bundle_pins
	sent_digest != signed_digest
	msg := sprintf(
		"image %s: the gateway's pin (%s) is not the signed bundle's (%s); publish the pins again (airlock policy publish)",
		[tools.entry.image, shown(sent_digest), shown(signed_digest)],
	)
}

deny contains {"code": "image_vulnerable", "message": msg, "package": "airlock.images"} if {
	runs_an_image
	is_number(scan.critical)
	scan.critical > 0
	msg := sprintf(
		"image %s (%s) has %d critical vulnerabilities (scan of %s, DB of %s)",
		[tools.entry.image, facts.digest, scan.critical, scan.scanned_at, scan.db_updated_at],
	)
}

deny contains {"code": "image_scan_invalid", "message": msg, "package": "airlock.images"} if {
	runs_an_image
	count(invalid_counts) > 0
	msg := sprintf(
		"image %s: its scan's %s count is not an integer >= 0, so it cannot say what it found (airlock images scan)",
		[tools.entry.image, concat(", ", sort(invalid_counts))],
	)
}

deny contains {"code": "image_scan_stale", "message": msg, "package": "airlock.images"} if {
	runs_an_image
	count(problems) > 0
	msg := sprintf(
		"image %s: %s; profile %q needs %s",
		[tools.entry.image, concat("; ", sort(problems)), tools.profile_name, concat(" and ", sort(needs))],
	)
}

shown(digest) := digest if digest != ""

shown("") := "none"

severities := ["critical", "high", "medium", "low"]

invalid_counts contains severity if {
	scan != null
	some severity in severities
	not valid_count(scan, severity)
}

valid_count(s, severity) if {
	n := s[severity]
	is_number(n)
	n >= 0
	n == floor(n)
}

needs contains sprintf("a scan within %v hours", [gate.max_age_hours]) if is_number(gate.max_age_hours)

needs contains sprintf("a vulnerability DB at most %v hours old", [gate.max_db_age_hours]) if {
	is_number(gate.max_db_age_hours)
}

problems contains why if {
	is_number(gate.max_age_hours)
	not within(scan, "scanned_at", gate.max_age_hours)
}

problems contains db_why if {
	is_number(gate.max_db_age_hours)
	not within(scan, "db_updated_at", gate.max_db_age_hours)
}

# The call's own time (input.request.time), not the evaluation's: the same
# input always gets the same decision. A time that does not parse is never
# within a limit, and neither is a scan that is null. (The scan is passed
# whole: an undefined argument would leave the negation undefined too.)
within(s, key, hours) if {
	age_ns := time.parse_rfc3339_ns(input.request.time) - time.parse_rfc3339_ns(s[key])
	age_ns <= (hours * 3600) * 1000000000
}

default why := "the image is not pinned (airlock images build)"

why := "the image was never scanned (airlock images scan)" if {
	facts != null
	scan == null
}

why := sprintf("the last scan was at %v", [scan.scanned_at]) if scan != null

db_why := why if scan == null

db_why := sprintf("the scan's vulnerability DB is of %v", [scan.db_updated_at]) if scan != null
