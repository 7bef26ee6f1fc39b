{{- define "medxiaohe.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "medxiaohe.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "medxiaohe.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- /* Egress every component needs: DNS and the object store. */ -}}
{{- define "medxiaohe.egress.base" -}}
{{- $np := .Values.networkPolicy -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  to:
    {{- toYaml $np.dns.to | nindent 4 }}
- ports:
    - {port: {{ $np.store.port }}, protocol: TCP}
  to:
    {{- toYaml $np.store.to | nindent 4 }}
{{- if .Values.tracing.otlpEndpoint }}
- ports:
    - {port: {{ $np.otel.port }}, protocol: TCP}
  to:
    {{- toYaml $np.otel.to | nindent 4 }}
{{- end }}
{{- end -}}

{{- /* The store and the component's own credential (a Secret per component, each limited
to its prefixes). Call with (dict "root" $ "component" NAME). */ -}}
{{- define "medxiaohe.env.store" -}}
{{- $s3 := .root.Values.store.s3 -}}
{{- $secret := required (printf "store.s3.credentials.%s: name the Secret of this component's store credential" .component) (index $s3.credentials .component) -}}
- {name: MEDXIAOHE_STORE_URI, value: {{ .root.Values.store.uri | quote }}}
- {name: MEDXIAOHE_S3_ENDPOINT, value: {{ $s3.endpoint | quote }}}
- {name: MEDXIAOHE_S3_SECURE, value: {{ $s3.secure | quote }}}
- {name: MEDXIAOHE_S3_REGION, value: {{ $s3.region | quote }}}
- name: MEDXIAOHE_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: accessKey}}
- name: MEDXIAOHE_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: secretKey}}
{{- end -}}

{{- /* Environment every platform process gets: the store with the component's credential
and the de-identification secret, from Secrets only. Call with (dict "root" $ "component" NAME). */ -}}
{{- define "medxiaohe.env.common" -}}
{{ include "medxiaohe.env.store" . }}
- name: MEDXIAOHE_DEID_SECRET
  valueFrom: {secretKeyRef: {name: {{ required "deid.existingSecret: name a Secret holding the de-identification secret (key `secret`)" .root.Values.deid.existingSecret }}, key: secret}}
{{- with .root.Values.broker.urlSecret }}
- name: MEDXIAOHE_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ . }}, key: url}}
{{- end }}
- {name: MEDXIAOHE_LOG_LEVEL, value: {{ .root.Values.logLevel | quote }}}
{{- include "medxiaohe.env.tracing" .root }}
{{- end -}}

{{- /* Traces to the OpenTelemetry collector, when one is named. */ -}}
{{- define "medxiaohe.env.tracing" -}}
{{- with .Values.tracing.otlpEndpoint }}
- {name: MEDXIAOHE_OTEL_ENDPOINT, value: {{ . | quote }}}
{{- end }}
{{- end -}}

{{- /* The predictor's door, and the guard's in front of KServe's Hugging Face runtime: mTLS
with the platform CA, the allow-list, tokens for callers that cannot use mTLS. Call with the
model block (.Values.model) as the dot. */ -}}
{{- define "medxiaohe.env.predictor" -}}
# mTLS with the platform CA; callers (certificate CN or token name) need an allow entry
- {name: MEDXIAOHE_TLS_CERT, value: /etc/medxiaohe/tls/tls.crt}
- {name: MEDXIAOHE_TLS_KEY, value: /etc/medxiaohe/tls/tls.key}
- {name: MEDXIAOHE_TLS_CLIENT_CA, value: /etc/medxiaohe/tls/ca.crt}
- name: MEDXIAOHE_PREDICTOR_ALLOW
  value: {{ .allow | toJson | quote }}
{{- with .tokensSecret }}
- name: MEDXIAOHE_PREDICTOR_TOKENS
  valueFrom: {secretKeyRef: {name: {{ . }}, key: tokens}}
{{- end }}
{{- end -}}

{{- /* Pod-level settings every platform pod shares: no API token, the pod security context,
the registry credentials. */ -}}
{{- define "medxiaohe.pod.common" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The container settings every platform container shares. */ -}}
{{- define "medxiaohe.container.security" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{- /* Where a process may write under a read-only root: /tmp and the caches (downloaded models,
Hugging Face, matplotlib), each an emptyDir. */ -}}
{{- define "medxiaohe.env.cache" -}}
- {name: HOME, value: /tmp}
- {name: MEDXIAOHE_MODEL_CACHE_DIR, value: /var/cache/medxiaohe/models}
- {name: HF_HOME, value: /var/cache/medxiaohe/huggingface}
- {name: XDG_CACHE_HOME, value: /var/cache/medxiaohe}
- {name: MPLCONFIGDIR, value: /var/cache/medxiaohe/matplotlib}
{{- end -}}
{{- define "medxiaohe.mounts.writable" -}}
- {name: tmp, mountPath: /tmp}
- {name: cache, mountPath: /var/cache/medxiaohe}
{{- end -}}
{{- define "medxiaohe.volumes.writable" -}}
- name: tmp
  emptyDir: {sizeLimit: {{ .Values.tmpVolumeMi }}Mi}
- name: cache
  emptyDir: {sizeLimit: {{ .Values.cacheVolumeMi }}Mi}
{{- end -}}
