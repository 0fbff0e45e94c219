{{- define "shardstream.name" -}}{{ .Release.Name }}-shardstream{{- end -}}
{{- define "shardstream.args" -}}
- serve
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
