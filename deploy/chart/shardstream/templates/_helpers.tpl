{{- define "shardstream.name" -}}{{ .Release.Name }}-shardstream{{- end -}}
{{/* Labels every object carries; selectors use the older app label only,
since a Deployment's selector cannot change on upgrade. */}}
{{- define "shardstream.labels" -}}
app.kubernetes.io/name: shardstream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The coordinator's in-cluster address, as loaders and trainers dial it
(and as its TLS certificate must name it). */}}
{{- define "shardstream.coordinatorAddr" -}}
{{ include "shardstream.name" . }}-coordinator.{{ .Release.Namespace }}.svc:{{ .Values.grpcPort }}
{{- end -}}

{{/* Flags both roles share; the role is the first argument. */}}
{{- define "shardstream.args" -}}
- --data={{ .Values.data }}
- --listen=0.0.0.0:{{ .Values.grpcPort }}
- --metrics-addr=0.0.0.0:{{ .Values.metricsPort }}
- --log-format=json
{{- if .Values.s3.endpoint }}
- --s3-endpoint={{ .Values.s3.endpoint }}
{{- end }}
{{- if .Values.s3.pathStyle }}
- --s3-path-style
{{- end }}
{{- end -}}

{{/* Security flags for every role: TLS, mutual TLS, auth file, token key. */}}
{{- define "shardstream.securityArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-cert=/etc/shardstream/tls/tls.crt
- --tls-key=/etc/shardstream/tls/tls.key
{{- if .Values.tls.mtls }}
- --client-ca=/etc/shardstream/client-ca/{{ .Values.tls.clientCA.key }}
{{- end }}
{{- end }}
{{- if .Values.auth.secretName }}
- --auth-file=/etc/shardstream/auth/{{ .Values.auth.key }}
{{- end }}
{{- if .Values.tokenKey.secretName }}
- --token-key-file=/etc/shardstream/token-key/{{ .Values.tokenKey.key }}
{{- end }}
{{- end -}}

{{/* The Secrets' mounts: whole directories, never subPath, so that
rotated files reach the pod and the server reloads them. */}}
{{- define "shardstream.securityMounts" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/shardstream/tls, readOnly: true}
{{- if .Values.tls.mtls }}
- {name: client-ca, mountPath: /etc/shardstream/client-ca, readOnly: true}
{{- end }}
{{- end }}
{{- if .Values.auth.secretName }}
- {name: auth, mountPath: /etc/shardstream/auth, readOnly: true}
{{- end }}
{{- if .Values.tokenKey.secretName }}
- {name: token-key, mountPath: /etc/shardstream/token-key, readOnly: true}
{{- end }}
{{- end -}}

{{- define "shardstream.securityVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret: {secretName: {{ required "tls.secretName is required with tls.enabled" .Values.tls.secretName }}}
{{- if .Values.tls.mtls }}
- name: client-ca
  secret: {secretName: {{ .Values.tls.clientCA.secretName | default .Values.tls.secretName }}}
{{- end }}
{{- end }}
{{- if .Values.auth.secretName }}
- name: auth
  secret: {secretName: {{ .Values.auth.secretName }}}
{{- end }}
{{- if .Values.tokenKey.secretName }}
- name: token-key
  secret: {secretName: {{ .Values.tokenKey.secretName }}}
{{- end }}
{{- end -}}

{{/* gRPC health over plaintext, or a TCP check when the port is TLS
(kubelet's gRPC probe cannot do TLS). */}}
{{- define "shardstream.probe" -}}
{{- if .Values.tls.enabled -}}
tcpSocket: {port: {{ .Values.grpcPort }}}
{{- else -}}
grpc: {port: {{ .Values.grpcPort }}}
{{- end -}}
{{- end -}}

{{/* How a loader reaches the coordinator's pool service: over TLS with the
server CA when TLS is on (it presents its own certificate for mutual TLS),
with the pool token when the coordinator checks tokens. */}}
{{- define "shardstream.loaderCoordArgs" -}}
- --coordinator={{ include "shardstream.coordinatorAddr" . }}
{{- if .Values.tls.enabled }}
- --coordinator-ca=/etc/shardstream/server-ca/{{ .Values.tls.serverCA.key }}
{{- end }}
{{- if .Values.auth.secretName }}
- --coordinator-token-file=/etc/shardstream/loader-token/{{ .Values.auth.loaderTokenSecret.key }}
{{- end }}
{{- end -}}

{{- define "shardstream.loaderCoordMounts" -}}
{{- if .Values.tls.enabled }}
- {name: server-ca, mountPath: /etc/shardstream/server-ca, readOnly: true}
{{- end }}
{{- if .Values.auth.secretName }}
- {name: loader-token, mountPath: /etc/shardstream/loader-token, readOnly: true}
{{- end }}
{{- end -}}

{{- define "shardstream.loaderCoordVolumes" -}}
{{- if .Values.tls.enabled }}
- name: server-ca
  secret: {secretName: {{ .Values.tls.serverCA.secretName | default .Values.tls.secretName }}}
{{- end }}
{{- if .Values.auth.secretName }}
- name: loader-token
  secret: {secretName: {{ .Values.auth.loaderTokenSecret.secretName }}}
{{- end }}
{{- end -}}

{{/* Value combinations that would deploy but not work: refused at render
time with what to set. */}}
{{- define "shardstream.checks" -}}
{{- if and .Values.auth.secretName (not .Values.tls.enabled) }}
{{- fail "auth.secretName needs tls.enabled: loaders send their pool token to the coordinator over TLS only" }}
{{- end }}
{{- if and .Values.auth.secretName (not .Values.auth.loaderTokenSecret.secretName) }}
{{- fail "auth.secretName needs auth.loaderTokenSecret.secretName: a Secret with a token whose auth-file line allows every dataset (*), for loaders to join the pool" }}
{{- end }}
{{- $l := .Values.loader }}
{{- if lt (int $l.terminationGracePeriodSeconds) (add $l.preStopSeconds $l.drainTimeoutSeconds 5 | int) }}
{{- fail (printf "loader.terminationGracePeriodSeconds (%v) must be at least loader.preStopSeconds + loader.drainTimeoutSeconds + 5 (%v): the kubelet would kill draining loaders" $l.terminationGracePeriodSeconds (add $l.preStopSeconds $l.drainTimeoutSeconds 5)) }}
{{- end }}
{{- if not (has $l.kind (list "Deployment" "StatefulSet")) }}
{{- fail (printf "loader.kind %q: want Deployment or StatefulSet" $l.kind) }}
{{- end }}
{{- if not (has $l.autoscaling.metric (list "desiredLoaders" "cpu")) }}
{{- fail (printf "loader.autoscaling.metric %q: want desiredLoaders or cpu" $l.autoscaling.metric) }}
{{- end }}
{{- end -}}
