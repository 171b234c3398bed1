{{/*
Helpers of the crmauthz chart. Every helper takes the chart's scope: its own root context, or
.Subcharts.crmauthz when an app's chart includes the sidecar templates (so names, values and the
image's default tag are the crmauthz chart's, whoever includes them).
*/}}

{{- define "crmauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crmauthz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crmauthz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crmauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crmauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "crmauthz.labels" -}}
helm.sh/chart: {{ include "crmauthz.chart" . }}
{{ include "crmauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "crmauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crmauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "crmauthz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret and key of the replication token. */}}
{{- define "crmauthz.tokenSecretName" -}}
{{- .Values.replication.existingSecret | default (printf "%s-replication" (include "crmauthz.fullname" .)) }}
{{- end }}

{{- define "crmauthz.tokenSecretKey" -}}
{{- if .Values.replication.existingSecret }}{{ .Values.replication.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "crmauthz.policiesConfigMapName" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "crmauthz.fullname" .)) }}
{{- end }}

{{/* Where the token Secret is mounted, and the file --replication-token-file names. */}}
{{- define "crmauthz.tokenDir" -}}/etc/crmauthz/replication{{- end }}
{{- define "crmauthz.tokenFile" -}}{{ include "crmauthz.tokenDir" . }}/token{{- end }}
{{- define "crmauthz.jwtDir" -}}/etc/crmauthz/jwt{{- end }}

{{/*
The address a listener binds: its host value, else 127.0.0.1 in sidecar mode (loopback, only the
pod's containers) and 0.0.0.0 in standalone mode (a Service must reach it).
Takes (list $ "decision"|"grpc"|"admin").
*/}}
{{- define "crmauthz.listenAddr" -}}
{{- $root := index . 0 }}
{{- $l := index $root.Values.listen (index . 1) }}
{{- $host := $l.host | default (ternary "127.0.0.1" "0.0.0.0" (eq $root.Values.mode "sidecar")) }}
{{- if contains ":" $host }}[{{ $host }}]:{{ $l.port }}{{ else }}{{ $host }}:{{ $l.port }}{{ end }}
{{- end }}

{{/* True ("true") when the listener binds loopback only, so its port is not declared. */}}
{{- define "crmauthz.isLoopback" -}}
{{- $addr := include "crmauthz.listenAddr" . }}
{{- if or (hasPrefix "127." $addr) (hasPrefix "[::1]:" $addr) (hasPrefix "localhost:" $addr) }}true{{ end }}
{{- end }}

{{/*
Container port names. In sidecar mode they carry a crmauthz- prefix so that they cannot clash
with the app's own ports (names are unique in a pod, 15 characters at most).
*/}}
{{- define "crmauthz.portName" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $short := dict "decision" "http" "grpc" "grpc" "admin" "admin" }}
{{- if eq $root.Values.mode "sidecar" }}crmauthz-{{ end }}{{ index $short $name }}
{{- end }}

{{- define "crmauthz.configMapName" -}}
{{- printf "%s-config" (include "crmauthz.fullname" .) }}
{{- end }}

{{/* Where the config ConfigMap is mounted, and the file --config names. */}}
{{- define "crmauthz.configDir" -}}/etc/crmauthz/config{{- end }}
{{- define "crmauthz.configFile" -}}{{ include "crmauthz.configDir" . }}/crmauthz.yaml{{- end }}

{{/*
The settings of `crmauthz serve`, as its --config file: a YAML mapping keyed by flag name
(docs/reference.md "Configuration file"). Flags in extraArgs override it.
*/}}
{{- define "crmauthz.config" -}}
{{- $c := dict }}
{{- if .Values.listen.grpc.enabled }}
{{- $_ := set $c "grpc-addr" (include "crmauthz.listenAddr" (list . "grpc")) }}
{{- end }}
{{- if not .Values.policies.builtin }}
{{- $_ := set $c "policies" .Values.policies.mountPath }}
{{- if .Values.policies.requireTests }}
{{- $_ := set $c "policies-require-tests" true }}
{{- end }}
{{- end }}
{{- $_ := set $c "replication-token-file" (include "crmauthz.tokenFile" .) }}
{{- with .Values.identity.subjectHeader }}
{{- $_ := set $c "subject-header" . }}
{{- end }}
{{- $jwt := .Values.identity.jwt }}
{{- if $jwt.hs256Secret.name }}
{{- $_ := set $c "jwt-hs256-secret-file" (printf "%s/hs256-secret" (include "crmauthz.jwtDir" .)) }}
{{- end }}
{{- if $jwt.jwksConfigMap.name }}
{{- $_ := set $c "jwt-jwks-file" (printf "%s/jwks.json" (include "crmauthz.jwtDir" .)) }}
{{- end }}
{{- with $jwt.issuer }}
{{- $_ := set $c "jwt-issuer" . }}
{{- end }}
{{- with $jwt.audience }}
{{- $_ := set $c "jwt-audience" . }}
{{- end }}
{{- with $jwt.subjectClaim }}
{{- $_ := set $c "subject-claim" . }}
{{- end }}
{{- with $jwt.leeway }}
{{- $_ := set $c "jwt-leeway" . }}
{{- end }}
{{- if .Values.replication.readyMinSeq }}
{{- $_ := set $c "ready-min-seq" (.Values.replication.readyMinSeq | int64) }}
{{- end }}
{{- $_ := set $c "log-level" .Values.logLevel }}
{{- with .Values.decisionLog }}
{{- $_ := set $c "decision-log" . }}
{{- end }}
{{- range $k, $v := .Values.config }}
{{- $_ := set $c $k $v }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/*
The arguments of `crmauthz serve`: the config file; the settings the image's environment sets
(CRMAUTHZ_ADDR, CRMAUTHZ_ADMIN_ADDR, CRMAUTHZ_DATA_DIR), which would override the file, as
flags; then extraArgs.
*/}}
{{- define "crmauthz.args" -}}
- serve
- --config={{ include "crmauthz.configFile" . }}
- --addr={{ include "crmauthz.listenAddr" (list . "decision") }}
- --admin-addr={{ include "crmauthz.listenAddr" (list . "admin") }}
- --data-dir={{ .Values.index.mountPath }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; a bad one fails the render with a message
that names the values to change.
*/}}
{{- define "crmauthz.validate" -}}
{{- if eq .Values.mode "sidecar" }}
{{- range $k := list "autoscaling" "podDisruptionBudget" "networkPolicy" "persistence" }}
{{- if (index $.Values $k).enabled }}
{{- fail (printf "%s.enabled is for mode: standalone; in sidecar mode the pod is the app's (see docs/kubernetes.md)" $k) }}
{{- end }}
{{- end }}
{{- if .Values.metrics.serviceMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled is for mode: standalone; in sidecar mode scrape the app's pods on the crmauthz-admin port" }}
{{- end }}
{{- end }}
{{- if and .Values.persistence.enabled (eq .Values.index.medium "Memory") }}
{{- fail "index.medium: Memory is for the emptyDir; with persistence.enabled the index is on the PersistentVolumeClaim" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.identity.jwt.hs256Secret.name .Values.identity.jwt.jwksConfigMap.name }}
{{- fail "identity.jwt: set hs256Secret.name or jwksConfigMap.name, not both" }}
{{- end }}
{{- $ports := list (int .Values.listen.decision.port) (int .Values.listen.admin.port) }}
{{- if .Values.listen.grpc.enabled }}{{ $ports = append $ports (int .Values.listen.grpc.port) }}{{ end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail "listen.*.port: the decision, admin and gRPC ports must differ" }}
{{- end }}
{{- if eq .Values.mode "standalone" }}
{{- range $l := list "decision" "grpc" }}
{{- if eq (include "crmauthz.isLoopback" (list $ $l)) "true" }}
{{- fail (printf "listen.%s.host is loopback, which the Service cannot reach in mode: standalone" $l) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq (include "crmauthz.isLoopback" (list . "admin")) "true" }}
{{- fail "listen.admin.host must not be loopback: the kubelet's probes reach the admin port on the pod's IP" }}
{{- end }}
{{- end }}

{{/*
The crmauthz container, in both modes. A YAML mapping (no leading "-").
*/}}
{{- define "crmauthz.container" -}}
name: {{ ternary .Values.sidecar.containerName "crmauthz" (eq .Values.mode "sidecar") }}
image: {{ include "crmauthz.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  {{- include "crmauthz.args" . | nindent 2 }}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  {{- if ne (include "crmauthz.isLoopback" (list . "decision")) "true" }}
  - name: {{ include "crmauthz.portName" (list . "decision") }}
    containerPort: {{ .Values.listen.decision.port }}
    protocol: TCP
  {{- end }}
  {{- if and .Values.listen.grpc.enabled (ne (include "crmauthz.isLoopback" (list . "grpc")) "true") }}
  - name: {{ include "crmauthz.portName" (list . "grpc") }}
    containerPort: {{ .Values.listen.grpc.port }}
    protocol: TCP
  {{- end }}
  - name: {{ include "crmauthz.portName" (list . "admin") }}
    containerPort: {{ .Values.listen.admin.port }}
    protocol: TCP
startupProbe:
  httpGet:
    path: /health/live
    port: {{ include "crmauthz.portName" (list . "admin") }}
  {{- toYaml .Values.probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /health/live
    port: {{ include "crmauthz.portName" (list . "admin") }}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /health/ready
    port: {{ include "crmauthz.portName" (list . "admin") }}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: crmauthz-config
    mountPath: {{ include "crmauthz.configDir" . }}
    readOnly: true
  {{- if not .Values.policies.builtin }}
  - name: crmauthz-policies
    mountPath: {{ .Values.policies.mountPath }}
    readOnly: true
  {{- end }}
  - name: crmauthz-token
    mountPath: {{ include "crmauthz.tokenDir" . }}
    readOnly: true
  {{- if or .Values.identity.jwt.hs256Secret.name .Values.identity.jwt.jwksConfigMap.name }}
  - name: crmauthz-jwt
    mountPath: {{ include "crmauthz.jwtDir" . }}
    readOnly: true
  {{- end }}
  - name: crmauthz-data
    mountPath: {{ .Values.index.mountPath }}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.native }}
restartPolicy: Always
{{- end }}
{{- end }}

{{/*
The volumes of the crmauthz container: a list (items start with "-"). The index volume is left
out when a StatefulSet's volumeClaimTemplates provide it.
*/}}
{{- define "crmauthz.volumes" -}}
- name: crmauthz-config
  configMap:
    name: {{ include "crmauthz.configMapName" . }}
{{- if not .Values.policies.builtin }}
- name: crmauthz-policies
  configMap:
    name: {{ include "crmauthz.policiesConfigMapName" . }}
{{- end }}
- name: crmauthz-token
  secret:
    secretName: {{ include "crmauthz.tokenSecretName" . }}
    items:
      - key: {{ include "crmauthz.tokenSecretKey" . }}
        path: token
    {{- if eq .Values.mode "sidecar" }}
    # 0444: the app's pod may set no fsGroup; only the containers that mount it see it.
    defaultMode: 292
    {{- else }}
    # 0440, readable through the pod's fsGroup.
    defaultMode: 288
    {{- end }}
{{- with .Values.identity.jwt.hs256Secret }}
{{- if .name }}
- name: crmauthz-jwt
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: hs256-secret
    defaultMode: {{ ternary 292 288 (eq $.Values.mode "sidecar") }}
{{- end }}
{{- end }}
{{- with .Values.identity.jwt.jwksConfigMap }}
{{- if .name }}
- name: crmauthz-jwt
  configMap:
    name: {{ .name }}
    items:
      - key: {{ .key }}
        path: jwks.json
{{- end }}
{{- end }}
{{- if not (and (eq .Values.mode "standalone") .Values.persistence.enabled) }}
- name: crmauthz-data
  emptyDir:
    {{- with .Values.index.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with .Values.index.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{/*
Sidecar mode: the crmauthz container as a list item, for the containers (or, with
sidecar.native, the initContainers) of an app's pod:

  containers:
    - name: app
      ...
    {{- include "crmauthz.sidecar.container" .Subcharts.crmauthz | nindent 4 }}
*/}}
{{- define "crmauthz.sidecar.container" -}}
{{- if ne .Values.mode "sidecar" }}
{{- fail "crmauthz.sidecar.container: set crmauthz.mode: sidecar in the app's values (in standalone mode the crmauthz chart runs its own Deployment)" }}
{{- end }}
{{- include "crmauthz.validate" . }}
{{- printf "- %s" (include "crmauthz.container" . | indent 2 | trim) }}
{{- end }}

{{/*
Sidecar mode: the volumes the crmauthz container mounts, as list items, for the app's pod:

  volumes:
    {{- include "crmauthz.sidecar.volumes" .Subcharts.crmauthz | nindent 4 }}
*/}}
{{- define "crmauthz.sidecar.volumes" -}}
{{- if ne .Values.mode "sidecar" }}
{{- fail "crmauthz.sidecar.volumes: set crmauthz.mode: sidecar in the app's values" }}
{{- end }}
{{- include "crmauthz.volumes" . | trim }}
{{- end }}

{{/* standalone: the pod template of the Deployment or StatefulSet. */}}
{{- define "crmauthz.podTemplate" -}}
metadata:
  labels:
    {{- include "crmauthz.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # crmauthz reads its --config file at start: a changed file rolls the pods.
    checksum/config: {{ include "crmauthz.config" . | sha256sum }}
    {{- if .Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.listen.admin.port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "crmauthz.serviceAccountName" . }}
  automountServiceAccountToken: false
  # No <SERVICE>_PORT variables: a Service named crmauthz-… would otherwise put CRMAUTHZ_*
  # variables in the environment, where flags read their twins.
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - {{ include "crmauthz.container" . | indent 6 | trim }}
  volumes:
    {{- include "crmauthz.volumes" . | trim | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
