{{/*
Where the brokers' monitors look for broker pods: the watched namespaces, or
every namespace when the operator watches all of them.
*/}}
{{- define "strata.brokerNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}

{{/*
Relabelings shared by the broker ServiceMonitor and PodMonitor: the Cluster's
name (pod label strata.dev/cluster) becomes `strata_cluster` and the broker id
(the StatefulSet pod index) `broker`, which the dashboard and the alerts group
by. `strata_cluster` rather than `cluster`: many Prometheus setups already use
`cluster` for the Kubernetes cluster.
*/}}
{{- define "strata.brokerRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_strata_dev_cluster]
  targetLabel: strata_cluster
- sourceLabels: [__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index]
  targetLabel: broker
{{- end -}}

{{/* Labels of the broker pods, as the operator's StatefulSet sets them. */}}
{{- define "strata.brokerSelector" -}}
app.kubernetes.io/name: strata-broker
app.kubernetes.io/managed-by: strata-operator
{{- end -}}
