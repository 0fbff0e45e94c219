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
