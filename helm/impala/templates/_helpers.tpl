{{/* Names, labels and the small pieces every component template shares. */}}

{{- define "impala.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "impala.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "impala.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's resources: (dict "ctx" $ "component" "actorpool") */}}
{{- define "impala.componentName" -}}
{{- printf "%s-%s" (include "impala.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "impala.labels" -}}
helm.sh/chart: {{ include "impala.chart" . }}
app.kubernetes.io/name: {{ include "impala.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: impala
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: (dict "ctx" $ "component" "actorpool") */}}
{{- define "impala.selectorLabels" -}}
app.kubernetes.io/name: {{ include "impala.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "impala.componentLabels" -}}
{{ include "impala.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "impala.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "impala.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image reference of a component block: (dict "ctx" $ "image" .Values.actorpool.image) */}}
{{- define "impala.image" -}}
{{- $repo := .image.repository -}}
{{- with .ctx.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo (.image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}

{{/* The learner's image block: the CUDA target when it requests GPUs, else the CPU one. */}}
{{- define "impala.learnerImage" -}}
{{- $image := deepCopy .Values.learner.image -}}
{{- if not $image.repository }}{{ $_ := set $image "repository" (ternary "impala-cuda" "impala-cpu" (gt (int .Values.learner.gpus) 0)) }}{{ end -}}
{{- include "impala.image" (dict "ctx" . "image" $image) -}}
{{- end -}}

{{- define "impala.runName" -}}
{{- default .Release.Name .Values.shared.run -}}
{{- end -}}

{{/*
An environment value as a quoted string. Helm reads YAML numbers as float64, and 16777216 would print
as 1.6777216e+07, which pydantic rejects for an int field; whole numbers print as integers instead.
*/}}
{{- define "impala.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/*
ConfigMap data of a component: the shared fields it has, its config block, and the fields the chart
owns. (dict "ctx" $ "shared" (list "run" ...) "config" .Values.x.config "managed" (dict ...))
*/}}
{{- define "impala.configData" -}}
{{- $ctx := .ctx -}}
{{- $values := dict "run" (include "impala.runName" $ctx) -}}
{{- range $key := .shared }}
{{- if ne $key "run" }}{{ $_ := set $values $key (index $ctx.Values.shared $key) }}{{ end }}
{{- end }}
{{- $values = merge $values .managed -}}
{{- range $key, $value := .config }}
{{- $_ := set $values $key $value }}
{{- end }}
{{- range $key, $value := $values }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "IMPALA_%s" (upper $key) }}: {{ include "impala.envValue" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Secret name and key holding a token: (dict "ctx" $ "component" "actorpool") */}}
{{- define "impala.tokenSecretName" -}}
{{- $auth := index .ctx.Values.auth .component -}}
{{- default (printf "%s-auth" (include "impala.fullname" .ctx)) $auth.existingSecret -}}
{{- end -}}

{{- define "impala.tokenSecretKey" -}}
{{- $auth := index .ctx.Values.auth .component -}}
{{- if $auth.existingSecret -}}{{ $auth.existingSecretKey }}{{- else -}}{{ printf "%s-token" .component }}{{- end -}}
{{- end -}}

{{/* A component has a token unless auth.insecure is set and none was given (then it is generated). */}}
{{- define "impala.hasToken" -}}
{{- $auth := index .ctx.Values.auth .component -}}
{{- if or $auth.token $auth.existingSecret (not .ctx.Values.auth.insecure) -}}true{{- end -}}
{{- end -}}

{{/*
A token as a mounted file: the volume, its mount and the variable naming the file.
(dict "ctx" $ "component" "weights" "volume" "weights-token" "variable" "IMPALA_WEIGHTS_TOKEN_FILE")
*/}}
{{- define "impala.tokenPath" -}}/var/run/secrets/impala/{{ .volume }}/token{{- end -}}

{{- define "impala.tokenVolume" -}}
{{- if include "impala.hasToken" . -}}
- name: {{ .volume }}
  secret:
    secretName: {{ include "impala.tokenSecretName" . }}
    items:
      - key: {{ include "impala.tokenSecretKey" . }}
        path: token
{{- end -}}
{{- end -}}

{{- define "impala.tokenMount" -}}
{{- if include "impala.hasToken" . -}}
- name: {{ .volume }}
  mountPath: {{ dir (include "impala.tokenPath" .) }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "impala.tokenEnv" -}}
{{- if include "impala.hasToken" . -}}
- name: {{ .variable }}
  value: {{ include "impala.tokenPath" . }}
{{- else if eq .variable "IMPALA_TOKEN_FILE" -}}
- name: IMPALA_INSECURE
  value: "true"
{{- end -}}
{{- end -}}

{{/* Redis URL Secret (holds the password inside the URL). */}}
{{- define "impala.redisSecretName" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- printf "%s-redis" (include "impala.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "impala.redisSecretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{- define "impala.redisEnv" -}}
- name: IMPALA_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "impala.redisSecretName" . }}
      key: {{ include "impala.redisSecretKey" . }}
{{- end -}}

{{- define "impala.weightsAddress" -}}
{{- printf "%s:%d" (include "impala.componentName" (dict "ctx" . "component" "weights")) (int .Values.weights.service.port) -}}
{{- end -}}

{{/* Annotations that roll a pod when its ConfigMap or a Secret it reads changes. */}}
{{- define "impala.checksums" -}}
checksum/config: {{ include (print .ctx.Template.BasePath "/" .component "/configmap.yaml") .ctx | sha256sum }}
{{- if .ctx.Values.shared.env_spec }}
checksum/env-spec: {{ toJson .ctx.Values.shared.env_spec | sha256sum }}
{{- end }}
{{- /* The inputs of the Secrets, not their rendering: generated tokens and certificates are random in
an offline render and stable in the cluster (lookup), and must not roll the pods on every upgrade. */}}
checksum/secrets: {{ toJson (list .ctx.Values.auth .ctx.Values.actorpool.tls .ctx.Values.redis.auth .ctx.Values.redis.external) | sha256sum }}
{{- end -}}

{{/* Pod-level fields every impala pod shares: (dict "ctx" $ "block" .Values.actorpool) */}}
{{- define "impala.podCommon" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .block.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .block.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .block.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A NetworkPolicy of a component: (dict "ctx" $ "component" "weights" "rules" (list ...)). Ingress
only: egress stays open (DNS, cloud endpoints). Every impala pod also admits metrics scrapers.
*/}}
{{- define "impala.networkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "impala.componentName" . }}
  labels:
    {{- include "impala.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "impala.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress"]
  ingress:
    {{- toYaml .rules | nindent 4 }}
{{- end -}}

{{/* `from` peer list selecting impala pods of this release by component. */}}
{{- define "impala.peerPods" -}}
- podSelector:
    matchExpressions:
      - key: app.kubernetes.io/instance
        operator: In
        values: [{{ .ctx.Release.Name | quote }}]
      - key: app.kubernetes.io/name
        operator: In
        values: [{{ include "impala.name" .ctx | quote }}]
      - key: app.kubernetes.io/component
        operator: In
        values: {{ toJson .components }}
{{- end -}}

{{- define "impala.metricsRule" -}}
from:
  - namespaceSelector:
      {{- toYaml .Values.networkPolicy.metricsNamespaceSelector | nindent 6 }}
ports:
  - port: metrics
    protocol: TCP
{{- end -}}

{{/*
shared.env_spec: the spec rendered as a file. envSpecManaged sets env_spec (its path) in a component's
managed ConfigMap fields; envSpecMount / envSpecVolume mount it. (dict "ctx" $ ...)
*/}}
{{- define "impala.envSpecPath" -}}/etc/impala/env-spec/spec.json{{- end -}}

{{- define "impala.envSpecManaged" -}}
{{- if .ctx.Values.shared.env_spec }}{{ $_ := set .managed "env_spec" (include "impala.envSpecPath" .ctx) }}{{ end -}}
{{- end -}}

{{- define "impala.envSpecMount" -}}
{{- if .ctx.Values.shared.env_spec }}
- name: env-spec
  mountPath: /etc/impala/env-spec
  readOnly: true
{{- end }}
{{- end -}}

{{- define "impala.envSpecVolume" -}}
{{- if .ctx.Values.shared.env_spec }}
- name: env-spec
  configMap:
    name: {{ include "impala.fullname" .ctx }}-env-spec
{{- end }}
{{- end -}}

{{/* The ActorPool's TLS Secret (tls.crt, tls.key, and ca.crt for clients). */}}
{{- define "impala.tlsSecretName" -}}
{{- .Values.actorpool.tls.existingSecret | default (printf "%s-tls" (include "impala.componentName" (dict "ctx" . "component" "actorpool"))) -}}
{{- end -}}

{{/* The name clients check in the ActorPool's certificate ("" = the Service name). */}}
{{- define "impala.tlsServerName" -}}
{{- .Values.actorpool.tls.serverName | default (include "impala.componentName" (dict "ctx" . "component" "actorpool")) -}}
{{- end -}}

{{/* Every DNS name of the chart's ActorPool certificate: the server name, the Service's in-cluster
names and actorpool.tls.dnsNames, as a list. */}}
{{- define "impala.tlsDnsNames" -}}
{{- $svc := include "impala.componentName" (dict "ctx" . "component" "actorpool") -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list (include "impala.tlsServerName" .) $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- concat $names .Values.actorpool.tls.dnsNames | uniq | toJson -}}
{{- end -}}
