{{/*
Names and labels.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "seatwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name for every object: fullnameOverride, or
<release>-<chart> (just <release> when it already contains the chart name).
Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "seatwarden.fullname" -}}
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

{{- define "seatwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "seatwarden.labels" -}}
helm.sh/chart: {{ include "seatwarden.chart" . }}
{{ include "seatwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ include "seatwarden.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: seatwarden
{{- end }}

{{/*
What the Service, the PDB, the HPA's Deployment and the NetworkPolicy select
on. Never change these in an upgrade: a Deployment's selector is immutable.
*/}}
{{- define "seatwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "seatwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "seatwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "seatwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "seatwarden.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "seatwarden.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "seatwarden.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Where things live in the container. The chart owns these paths and sets the
matching settings itself (see seatwarden.config).
*/}}
{{- define "seatwarden.configDir" -}}/etc/seatwarden/config{{- end }}
{{- define "seatwarden.configFile" -}}{{ include "seatwarden.configDir" . }}/seatwarden.toml{{- end }}
{{- define "seatwarden.signingKeyDir" -}}/etc/seatwarden/signing{{- end }}
{{- define "seatwarden.signingKeyPath" -}}{{ include "seatwarden.signingKeyDir" . }}/signing-key.pem{{- end }}

{{/* host:port for a listener; IPv6 hosts get brackets ("[::]:8080"). */}}
{{- define "seatwarden.listenAddr" -}}
{{- $host := .host | toString }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}

{{/*
The public base URL of links in email: config.http.public_url when given,
otherwise derived from the first Ingress host (https when a TLS entry lists
it), otherwise empty (the server keeps its own default, which is only right
on a developer's machine; NOTES.txt warns).
*/}}
{{- define "seatwarden.publicUrl" -}}
{{- $http := .Values.config.http | default dict }}
{{- if $http.public_url }}
{{- $http.public_url }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $scheme := "http" }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}{{ $scheme = "https" }}{{ end }}
{{- end }}
{{- printf "%s://%s" $scheme $host }}
{{- end }}
{{- end }}

{{/*
The effective settings: config from values, with the keys the chart owns
(listeners, data_dir, the signing key's path, the template directory) set
to match the Deployment's ports and mounts.
*/}}
{{- define "seatwarden.configDict" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $http := get $cfg "http" | default dict }}
{{- $_ := set $http "listen" (include "seatwarden.listenAddr" (dict "host" .Values.listenAddress "port" .Values.ports.http)) }}
{{- $_ = set $http "metrics_listen" (include "seatwarden.listenAddr" (dict "host" .Values.listenAddress "port" .Values.ports.metrics)) }}
{{- $publicUrl := include "seatwarden.publicUrl" . }}
{{- if $publicUrl }}{{ $_ = set $http "public_url" $publicUrl }}{{ end }}
{{- $_ = set $cfg "http" $http }}
{{- $_ = set $cfg "data_dir" .Values.dataDir }}
{{- $signing := get $cfg "signing" | default dict }}
{{- $_ = set $signing "key_path" (include "seatwarden.signingKeyPath" .) }}
{{- /* Every node must share the mounted key: never mint one per pod. */}}
{{- $_ = set $signing "generate_if_missing" false }}
{{- $_ = set $cfg "signing" $signing }}
{{- if .Values.emailTemplates.overrides }}
{{- $mail := get $cfg "mail" | default dict }}
{{- $_ = set $mail "template_dir" .Values.emailTemplates.dir }}
{{- $_ = set $cfg "mail" $mail }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
TOML from a map, written here because Helm's toToml turns every number into
a float ("20.0"), which seatwarden's integer settings refuse.

seatwarden.toml.table: dict "table" MAP "path" LIST. A table's plain keys
come before its sub-tables (in TOML every key after a [header] belongs to
that header). A key whose value is null is left out, so `key: null` in a
values file drops a key another values file set. Keys are sorted, which
keeps the ConfigMap, and so the pods' checksum annotation, stable.
*/}}
{{- define "seatwarden.toml.table" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "seatwarden.toml.key" $k }} = {{ include "seatwarden.toml.value" (dict "v" $v "path" (append $path $k)) }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if kindIs "map" $v }}
{{- $sub := append $path $k }}

[{{ range $i, $p := $sub }}{{ if $i }}.{{ end }}{{ include "seatwarden.toml.key" $p }}{{ end }}]
{{- include "seatwarden.toml.table" (dict "table" $v "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A bare key when TOML allows one, else a quoted key. */}}
{{- define "seatwarden.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ include "seatwarden.toml.string" . }}{{ end }}
{{- end }}

{{/*
A TOML basic string. Backslash, quote and the usual control characters are
escaped by hand for a readable ConfigMap; a string with any other control
character goes through toJson, whose escapes TOML reads the same way.
*/}}
{{- define "seatwarden.toml.string" -}}
{{- if regexMatch "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]" . }}
{{- toJson . }}
{{- else }}
{{- printf "\"%s\"" (. | replace "\\" "\\\\" | replace "\"" "\\\"" | replace "\n" "\\n" | replace "\r" "\\r" | replace "\t" "\\t") }}
{{- end }}
{{- end }}

{{/* dict "v" VALUE "path" LIST: one value (string, bool, number, array). */}}
{{- define "seatwarden.toml.value" -}}
{{- $v := .v }}
{{- if kindIs "string" $v }}
{{- include "seatwarden.toml.string" $v }}
{{- else if kindIs "bool" $v }}
{{- $v }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}
{{- $v }}
{{- else if kindIs "float64" $v }}
{{- /* Values files give every number as a float64: whole ones are integers. */}}
{{- if eq $v (float64 (int64 $v)) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "slice" $v }}
{{- $path := .path }}
{{- print "[" }}
{{- range $i, $e := $v }}
{{- if $i }}, {{ end }}
{{- if or (kindIs "map" $e) (kindIs "slice" $e) (kindIs "invalid" $e) }}
{{- fail (printf "config.%s: arrays may hold only strings, numbers and booleans" (join "." $path)) }}
{{- end }}
{{- include "seatwarden.toml.value" (dict "v" $e "path" $path) }}
{{- end }}
{{- print "]" }}
{{- else }}
{{- fail (printf "config.%s: a %s cannot be written as TOML" (join "." .path) (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* The whole settings file. */}}
{{- define "seatwarden.configToml" -}}
# Rendered by the seatwarden Helm chart from .Values.config; layered over the
# settings compiled into seatwarden (config/default.toml), and under the
# SEATWARDEN__SECTION__KEY environment variables that carry the secrets.
{{- include "seatwarden.toml.table" (dict "table" (include "seatwarden.configDict" . | fromYaml) "path" list) }}
{{- end }}

{{/* config.http.shutdown_grace_secs, or seatwarden's default. */}}
{{- define "seatwarden.shutdownGrace" -}}
{{- $http := .Values.config.http | default dict }}
{{- if hasKey $http "shutdown_grace_secs" }}{{ int $http.shutdown_grace_secs }}{{ else }}20{{ end }}
{{- end }}

{{/*
The pod's kill timeout: the value given, or the preStop sleep plus the
server's shutdown grace plus 10 s for the process to exit after it.
*/}}
{{- define "seatwarden.terminationGracePeriodSeconds" -}}
{{- if ne (toString .Values.terminationGracePeriodSeconds) "" }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add (int .Values.shutdown.preStopSleepSeconds) (include "seatwarden.shutdownGrace" . | int) 10 }}
{{- end }}
{{- end }}

{{/*
Environment variables from existing Secrets: name and key per setting;
entries with an empty name are left out.
*/}}
{{- define "seatwarden.secretEnv" -}}
{{- $vars := dict
  "databaseUrl" "SEATWARDEN__DATABASE__URL"
  "redisUrl" "SEATWARDEN__REDIS__URL"
  "redisClusterUrls" "SEATWARDEN__REDIS__CLUSTER_URLS"
  "smtpUrl" "SEATWARDEN__MAIL__SMTP_URL"
  "opsToken" "SEATWARDEN__OPS__TOKEN"
  "accessTokenSecret" "SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET"
  "stripeSecretKey" "SEATWARDEN__STRIPE__SECRET_KEY"
  "stripeWebhookSecret" "SEATWARDEN__STRIPE__WEBHOOK_SECRET"
  "stripePreviousWebhookSecret" "SEATWARDEN__STRIPE__PREVIOUS_WEBHOOK_SECRET" }}
{{- range $entry := keys $vars | sortAlpha }}
{{- $ref := get $.Values.secrets $entry | default dict }}
{{- if $ref.name }}
- name: {{ get $vars $entry }}
  valueFrom:
    secretKeyRef:
      name: {{ tpl $ref.name $ }}
      key: {{ required (printf "secrets.%s.key is required when secrets.%s.name is set" $entry $entry) $ref.key }}
{{- if eq $entry "opsToken" }}
{{- /* The same token under the name `seatwarden ops` reads, so that
       `kubectl exec ... -- seatwarden ops subsystems` works in the pod. */}}
- name: SEATWARDEN_OPS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ tpl $ref.name $ }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks of values that would otherwise surface as a crash loop, or worse,
as a cluster that works until the second pod. Included by the Deployment.
*/}}
{{- define "seatwarden.validate" -}}
{{- $v := .Values }}
{{- if not $v.signingKey.secretName }}
{{- fail "signingKey.secretName is required: every node signs seat tokens with one key, mounted from that Secret (kubectl create secret generic NAME --from-file=signing-key.pem=KEY.pem)" }}
{{- end }}
{{- /* With signing.generate_if_missing false (set by the chart) seatwarden
       generates no access-token key either: it must come from a Secret. */}}
{{- if not (get $v.secrets "accessTokenSecret" | default dict).name }}
{{- fail "secrets.accessTokenSecret.name is required: with the mounted signing key (signing.generate_if_missing = false) seatwarden generates no access-token key, and every node must share one anyway" }}
{{- end }}
{{- $redis := (get $v.secrets "redisUrl" | default dict).name }}
{{- $redisCluster := (get $v.secrets "redisClusterUrls" | default dict).name }}
{{- if and $redis $redisCluster }}
{{- fail "secrets.redisUrl and secrets.redisClusterUrls: set one (a server or a cluster), not both; clear the other's name" }}
{{- end }}
{{- if or $v.autoscaling.enabled (gt (int $v.replicaCount) 1) }}
{{- if not (get $v.secrets "databaseUrl" | default dict).name }}
{{- fail "secrets.databaseUrl.name is required with more than one replica (or autoscaling): nodes must share one PostgreSQL" }}
{{- end }}
{{- if not (or $redis $redisCluster) }}
{{- fail "secrets.redisUrl.name (or secrets.redisClusterUrls.name) is required with more than one replica (or autoscaling): nodes must share one seat ledger" }}
{{- end }}
{{- end }}
{{- $stripeKey := (get $v.secrets "stripeSecretKey" | default dict).name }}
{{- $stripeHook := (get $v.secrets "stripeWebhookSecret" | default dict).name }}
{{- if and $stripeKey (not $stripeHook) }}
{{- fail "secrets.stripeWebhookSecret is required with secrets.stripeSecretKey: seatwarden refuses a Stripe key without the webhook signing secret" }}
{{- end }}
{{- $cfg := $v.config | default dict }}
{{- /* Secrets have no place in a ConfigMap: they come from secrets.* */}}
{{- range $key := list "ops.token" "auth.access_token_secret" "stripe.secret_key" "stripe.webhook_secret" "stripe.previous_webhook_secret" }}
{{- $parts := splitList "." $key }}
{{- $section := get $cfg (index $parts 0) | default dict }}
{{- if hasKey $section (index $parts 1) }}
{{- fail (printf "config.%s is a secret: reference an existing Secret under secrets.* instead (it would land in a ConfigMap)" $key) }}
{{- end }}
{{- end }}
{{- /* Keys the chart sets from ports, dataDir and the mounts. */}}
{{- $http := get $cfg "http" | default dict }}
{{- $signing := get $cfg "signing" | default dict }}
{{- $mail := get $cfg "mail" | default dict }}
{{- if or (hasKey $http "listen") (hasKey $http "metrics_listen") }}
{{- fail "config.http.listen and config.http.metrics_listen are set by the chart: use ports.http, ports.metrics and listenAddress" }}
{{- end }}
{{- if hasKey $cfg "data_dir" }}
{{- fail "config.data_dir is set by the chart: use dataDir" }}
{{- end }}
{{- if or (hasKey $signing "key_path") (hasKey $signing "generate_if_missing") }}
{{- fail "config.signing.key_path and generate_if_missing are set by the chart: use signingKey.*" }}
{{- end }}
{{- if hasKey $mail "template_dir" }}
{{- fail "config.mail.template_dir is set by the chart: use emailTemplates.*" }}
{{- end }}
{{- range $name, $content := $v.emailTemplates.overrides }}
{{- if not (regexMatch "^[A-Za-z0-9][-._A-Za-z0-9]*$" $name) }}
{{- fail (printf "emailTemplates.overrides: %q is not a file name" $name) }}
{{- end }}
{{- if not (kindIs "string" $content) }}
{{- fail (printf "emailTemplates.overrides.%s: the template must be a string" $name) }}
{{- end }}
{{- end }}
{{- /* The kubelet kills the pod terminationGracePeriodSeconds after it starts
       stopping it; the preStop sleep and the server's own shutdown both run
       inside that budget. */}}
{{- $grace := include "seatwarden.shutdownGrace" . | int }}
{{- $sleep := int $v.shutdown.preStopSleepSeconds }}
{{- $kill := include "seatwarden.terminationGracePeriodSeconds" . | int }}
{{- if le $kill (add $sleep $grace) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdown.preStopSleepSeconds + config.http.shutdown_grace_secs (%d + %d)" $kill $sleep $grace) }}
{{- end }}
{{- if and $v.shutdown.nativeSleep (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "shutdown.nativeSleep needs Kubernetes 1.30 or newer (this is %s)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
