{{/*
The chart is the kustomize base k8s/ (files/k8s links to it) with the values applied:
base.yaml reads k8s/kustomization.yaml's resources, and these helpers change each object
where a value says so. Nothing else of the base is restated here, so the two cannot drift.
*/}}

{{/* The name that replaces "nsprov" in object names: the release's if it says nsprov. */}}
{{- define "nsprov.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "nsprov" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nsprov" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A base object's name in this release: nsprov -> fullname, nsprov-x -> fullname-x. */}}
{{- define "nsprov.rename" -}}
{{- $fullname := include "nsprov.fullname" .root -}}
{{- if eq .name "nsprov" -}}
{{- $fullname -}}
{{- else if hasPrefix "nsprov-" .name -}}
{{- printf "%s%s" $fullname (trimPrefix "nsprov" .name) -}}
{{- else -}}
{{- .name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the token file. */}}
{{- define "nsprov.tokensSecret" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-tokens" (include "nsprov.fullname" .)) -}}
{{- end -}}

{{/* The base's selector and nsprov's identity are written into the admission policies'
CEL; a release with another selector, namespace or name gets its own. */}}
{{- define "nsprov.admissionText" -}}
{{- $root := .root -}}
{{- $selector := splitn "=" 2 $root.Values.selector -}}
{{- if not $selector._1 -}}
{{- fail (printf "selector %q is not key=value" $root.Values.selector) -}}
{{- end -}}
{{- $identity := printf "system:serviceaccount:%s:%s" $root.Release.Namespace (include "nsprov.fullname" $root) -}}
{{- $text := .text -}}
{{- $text = replace "system:serviceaccount:nsprov:nsprov" $identity $text -}}
{{- $text = replace "controller.observatorium.io=namespace-provisioner" $root.Values.selector $text -}}
{{- $text = replace "\"'controller.observatorium.io'\"" (printf "\"'%s'\"" $selector._0) $text -}}
{{- $text = replace "\"'namespace-provisioner'\"" (printf "\"'%s'\"" $selector._1) $text -}}
{{- $text -}}
{{- end -}}

{{/* Labels on every object: the base's (kustomization.yaml) and Helm's own. */}}
{{- define "nsprov.labels" -}}
{{- $labels := dict -}}
{{- range $k := .kustomization.labels -}}
{{- $labels = merge $labels $k.pairs -}}
{{- end -}}
{{- $_ := set $labels "helm.sh/chart" (printf "%s-%s" .root.Chart.Name .root.Chart.Version) -}}
{{- $_ = set $labels "app.kubernetes.io/managed-by" .root.Release.Service -}}
{{- $_ = set $labels "app.kubernetes.io/instance" .root.Release.Name -}}
{{- $_ = set $labels "app.kubernetes.io/version" .root.Chart.AppVersion -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Whether the values keep a base object of this kind. */}}
{{- define "nsprov.kept" -}}
{{- $kind := .o.kind -}}
{{- if eq $kind "Namespace" -}}
{{/* Helm installs into the release namespace; it does not own it. */}}
{{- else if and (hasPrefix "ValidatingAdmissionPolicy" $kind) (not .root.Values.admissionPolicies.enabled) -}}
{{- else if and (eq $kind "NetworkPolicy") (not .root.Values.networkPolicy.enabled) -}}
{{- else if and (eq $kind "ServiceMonitor") (not .root.Values.serviceMonitor.enabled) -}}
{{- else if and (eq $kind "PrometheusRule") (not .root.Values.prometheusRule.enabled) -}}
{{- else -}}
yes
{{- end -}}
{{- end -}}

{{/* Changes a base object in place as the values say. */}}
{{- define "nsprov.adapt" -}}
{{- $o := .o -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $meta := $o.metadata -}}
{{- $_ := set $meta "name" (include "nsprov.rename" (dict "name" $meta.name "root" $root)) -}}
{{- /* The base's own namespace becomes the release's; another (the events Role in
default) stays where the base puts it. */ -}}
{{- if eq ($meta.namespace | default "") "nsprov" -}}
{{- $_ = set $meta "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- $_ = set $meta "labels" (merge (fromYaml (include "nsprov.labels" .)) ($meta.labels | default dict)) -}}
{{- if hasKey $o "roleRef" -}}
{{- $_ = set $o.roleRef "name" (include "nsprov.rename" (dict "name" $o.roleRef.name "root" $root)) -}}
{{- range $subject := $o.subjects -}}
{{- $_ = set $subject "name" (include "nsprov.rename" (dict "name" $subject.name "root" $root)) -}}
{{- if eq ($subject.namespace | default "") "nsprov" -}}
{{- $_ = set $subject "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq $o.kind "ValidatingAdmissionPolicy") $o.spec.matchConstraints.namespaceSelector -}}
{{- include "nsprov.adaptNamespaceSelector" . -}}
{{- end -}}
{{- if eq $o.kind "ValidatingAdmissionPolicyBinding" -}}
{{- $_ = set $o.spec "policyName" (include "nsprov.rename" (dict "name" $o.spec.policyName "root" $root)) -}}
{{- end -}}
{{- if eq $o.kind "ClusterRole" -}}
{{- include "nsprov.adaptClusterRole" . -}}
{{- end -}}
{{- if eq $o.kind "Deployment" -}}
{{- include "nsprov.adaptDeployment" . -}}
{{- end -}}
{{- end -}}

{{/* Another selector: the policies' namespaceSelector by matchExpressions, as the kustomize
component k8s/components/selector writes it (kustomize can set a value, not a map key). */}}
{{- define "nsprov.adaptNamespaceSelector" -}}
{{- $v := .root.Values -}}
{{- if ne $v.selector "controller.observatorium.io=namespace-provisioner" -}}
{{- $selector := splitn "=" 2 $v.selector -}}
{{- $expression := dict "key" $selector._0 "operator" "In" "values" (list $selector._1) -}}
{{- $_ := set .o.spec.matchConstraints "namespaceSelector" (dict "matchExpressions" (list $expression)) -}}
{{- end -}}
{{- end -}}

{{/* The grant's name and rules; nsprov's bind on the grant and on bindClusterRoles. */}}
{{- define "nsprov.adaptClusterRole" -}}
{{- $o := .o -}}
{{- $v := .root.Values -}}
{{- if eq $o.metadata.name "namespace-provisioner-grant" -}}
{{- $_ := set $o.metadata "name" $v.grant.name -}}
{{- $_ = set $o "rules" $v.grant.rules -}}
{{- else -}}
{{- range $rule := $o.rules -}}
{{- if has "namespace-provisioner-grant" ($rule.resourceNames | default list) -}}
{{- $names := without $rule.resourceNames "namespace-provisioner-grant" -}}
{{- $_ := set $rule "resourceNames" (concat $names (list $v.grant.name) $v.bindClusterRoles | uniq) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Replicas, image, resources, environment, the token Secret and the policy mount. */}}
{{- define "nsprov.adaptDeployment" -}}
{{- $o := .o -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $fullname := include "nsprov.fullname" $root -}}
{{- $_ := set $o.spec "replicas" ($v.replicas | int) -}}
{{- $template := $o.spec.template -}}
{{- if $v.podAnnotations -}}
{{- $_ = set $template.metadata "annotations" (merge (dict) $v.podAnnotations ($template.metadata.annotations | default dict)) -}}
{{- end -}}
{{- $pod := $template.spec -}}
{{- $_ = set $pod "serviceAccountName" (include "nsprov.rename" (dict "name" $pod.serviceAccountName "root" $root)) -}}
{{- $container := index $pod.containers 0 -}}
{{- $_ = set $container "image" (printf "%s:%s" $v.image.repository ($v.image.tag | default $root.Chart.AppVersion)) -}}
{{- if $v.image.pullPolicy -}}
{{- $_ = set $container "imagePullPolicy" $v.image.pullPolicy -}}
{{- end -}}
{{- if $v.resources -}}
{{- $_ = set $container "resources" $v.resources -}}
{{- end -}}
{{- $env := $container.env | default list -}}
{{- if ne $v.selector "controller.observatorium.io=namespace-provisioner" -}}
{{- $env = append $env (dict "name" "NSPROV_SELECTOR" "value" $v.selector) -}}
{{- end -}}
{{- if ne $v.grant.name "namespace-provisioner-grant" -}}
{{- $env = append $env (dict "name" "NSPROV_CLUSTER_ROLE" "value" $v.grant.name) -}}
{{- end -}}
{{- if $v.policy -}}
{{- $env = append $env (dict "name" "NSPROV_POLICY_FILE" "value" "/etc/nsprov/policy/policy.yaml") -}}
{{- $_ = set $container "volumeMounts" (append $container.volumeMounts (dict "name" "policy" "mountPath" "/etc/nsprov/policy" "readOnly" true)) -}}
{{- $_ = set $pod "volumes" (append $pod.volumes (dict "name" "policy" "configMap" (dict "name" (printf "%s-policy" $fullname)))) -}}
{{- end -}}
{{- $_ = set $container "env" (concat $env $v.env) -}}
{{- range $volume := $pod.volumes -}}
{{- if and (hasKey $volume "secret") (eq $volume.secret.secretName "nsprov-tokens") -}}
{{- $_ = set $volume.secret "secretName" (include "nsprov.tokensSecret" $root) -}}
{{- end -}}
{{- end -}}
{{- end -}}
