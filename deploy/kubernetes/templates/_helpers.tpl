{{/* Names and labels. */}}
{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airlock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "airlock.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "airlock.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "airlock.labels" -}}
{{ include "airlock.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository:tag, or repository:tag@digest when a digest pins it. */}}
{{- define "airlock.image" -}}
{{- if .digest -}}
{{- printf "%s:%s@%s" .repository .tag .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "airlock.executorHost" -}}
{{- printf "%s-executor.%s.svc" (include "airlock.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
Pod Security "restricted" for one container running as uid (and gid) .uid:
non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp,
read-only root filesystem.
*/}}
{{- define "airlock.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
An initContainer that copies secret files from a root-owned secret volume
(.from) into a memory-backed emptyDir (.to) as the daemon's own uid with
mode 0600: the daemons refuse secret files that are not their own
(airlock/common/_secrets.py), and Kubernetes secret volumes are root-owned.
Same image and uid as the container it serves; the main container mounts
only .to.
*/}}
{{- define "airlock.secretCopy" -}}
- name: {{ .name }}
  image: {{ include "airlock.image" .image }}
  imagePullPolicy: {{ .image.pullPolicy }}
  command:
    - install
    - -m
    - "0600"
    {{- range .files }}
    - {{ printf "%s/%s" $.from . }}
    {{- end }}
    - {{ .to }}/
  securityContext:
    {{- include "airlock.restrictedSecurityContext" (dict "uid" .uid) | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    - name: {{ .fromVolume }}
      mountPath: {{ .from }}
      readOnly: true
    - name: {{ .toVolume }}
      mountPath: {{ .to }}
{{- end -}}

{{/*
OPA's system.authz policy, the same text airlock.cli._opa.authz_policy writes
for `airlock up` but for its first line (tests/integration/test_helm_chart.py
compares them): the gateway's token (by digest) may POST its queries; GET
health and metrics are open, for probes and Prometheus.
*/}}
{{- define "airlock.authzPolicy" -}}
# Rendered by the Airlock Helm chart: who may use this OPA's API (see airlock/cli/_opa.py).
package system.authz

default allow := false

gateway_queries := {
	["v1", "data", "airlock", "decision"],
	["v1", "data", "airlock", "artifacts", "decision"],
	["v1", "data", "airlock", "tool_definitions", "decision"],
	["v1", "data", "airlock", "granted_tools"],
	["v1", "data", "airlock", "config", "shadow"],
}

# The gateway, and only for the decision documents it asks for.
allow if {
	crypto.sha256(input.identity) == "{{ .Values.opa.authz.gatewayTokenSha256 | lower }}"
	input.method == "POST"
	input.path in gateway_queries
}

# Liveness and metrics, for probes and Prometheus (the diagnostic address
# serves nothing else, and the same authorization applies there).
allow if {
	input.method == "GET"
	input.path in {["health"], ["metrics"]}
}
{{- end -}}
