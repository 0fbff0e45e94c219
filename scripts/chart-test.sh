#!/usr/bin/env bash
# make chart-test: lint and render deploy/chart/shardstream with several value
# combinations and validate every object strictly against the Kubernetes
# schemas of a pinned version, offline (scripts/validate_k8s.py); check the
# values the combination is about; check that combinations that could not
# work are refused at render time; and prove the validator bites on broken
# manifests (deploy/chart/tests/invalid).
#
# Every container's subcommand and flags must exist in the binary it runs, and
# the rendered coordinator and loader commands must run with it.
#
#   HELM=.tools/bin/helm PY=.venv/bin/python BIN=bin/shardstream KUBE_VERSION=1.33 scripts/chart-test.sh
set -euo pipefail

HELM=${HELM:-helm}
PY=${PY:-python3}
KUBE_VERSION=${KUBE_VERSION:-1.33}
BIN=${BIN:-bin/shardstream}
CHART=deploy/chart/shardstream
REL=data
NS=training-data
N=$REL-shardstream
LOADER=Deployment/$N-loader:spec.template.spec
COORD=Deployment/$N-coordinator:spec.template.spec
VALIDATE=("$PY" scripts/validate_k8s.py --kube-version "$KUBE_VERSION")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# helm, without its note that dashboards/shardstream.json is a link (to
# deploy/grafana/shardstream.json, on purpose).
helm_() {
	"$HELM" "$@" 2> >(grep -v "found symbolic link in path" >&2)
}

SECURE=(--set tls.enabled=true,tls.secretName=shardstream-tls,tls.mtls=true
	--set auth.secretName=shardstream-auth,auth.loaderTokenSecret.secretName=shardstream-loader-token
	--set tokenKey.secretName=shardstream-token-key)

# case NAME [helm flags...] -- [validate_k8s.py checks...]
case_() {
	local name=$1; shift
	local flags=()
	while [[ $1 != -- ]]; do flags+=("$1"); shift; done
	shift
	echo "== $name"
	local out
	out=$(helm_ lint --strict "$CHART" "${flags[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
	helm_ template "$REL" "$CHART" --namespace "$NS" --kube-version "$KUBE_VERSION" "${flags[@]}" |
		"${VALIDATE[@]}" --binary "$BIN" "$@" -
}

# refused NAME TEXT [helm flags...]: helm template must fail saying TEXT.
refused() {
	local name=$1 text=$2; shift 2
	local out
	echo "== refused: $name"
	if out=$(helm_ template "$REL" "$CHART" --namespace "$NS" "$@" 2>&1); then
		echo "rendered, but should have been refused with: $text" >&2; exit 1
	fi
	grep -qF -- "$text" <<<"$out" || { echo "refused, but not with '$text':" >&2; echo "$out" >&2; exit 1; }
}

case_ defaults -- \
	--expect "$COORD.containers.0.args=coordinator" \
	--expect "$COORD.securityContext.runAsUser=65532" \
	--expect "$LOADER.containers.0.securityContext.readOnlyRootFilesystem=True" \
	--expect "$COORD.containers.0.livenessProbe.grpc.port=7070" \
	--expect "Deployment/$N-coordinator:spec.strategy.type=Recreate" \
	--expect "PodDisruptionBudget/$N-coordinator:spec.minAvailable=1" \
	--expect "PodDisruptionBudget/$N-loader:spec.maxUnavailable=1" \
	--expect "PodDisruptionBudget/$N-loader:spec.selector.matchLabels.app=$N-loader" \
	--expect "$LOADER.containers.0.args=loader" \
	--expect "$LOADER.containers.0.args=--coordinator=$N-coordinator.$NS.svc:7070" \
	--expect "$LOADER.containers.0.args=--advertise=\$(POD_IP):7070" \
	--expect "$LOADER.containers.0.args=--pre-stop=5s" \
	--expect "$LOADER.containers.0.args=--drain-timeout=100s" \
	--expect "$LOADER.containers.0.env.0.valueFrom.fieldRef.fieldPath=status.podIP" \
	--expect "$LOADER.containers.0.readinessProbe.grpc.port=7070" \
	--expect "$LOADER.terminationGracePeriodSeconds=115" \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.metrics.0.type=External" \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.metrics.0.external.metric.name=shardstream_loaders_desired" \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.metrics.0.external.metric.selector.matchLabels.service=$N-coordinator" \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.metrics.0.external.target.type=AverageValue" \
	--absent NetworkPolicy --absent ServiceMonitor --absent ConfigMap

case_ "tls + mtls + auth + token key" "${SECURE[@]}" -- \
	--expect "$COORD.containers.0.args=--client-ca=/etc/shardstream/client-ca/ca.crt" \
	--expect "$COORD.containers.0.args=--auth-file=/etc/shardstream/auth/auth.txt" \
	--expect "$COORD.containers.0.readinessProbe.tcpSocket.port=7070" \
	--expect "$LOADER.containers.0.args=--coordinator-ca=/etc/shardstream/server-ca/ca.crt" \
	--expect "$LOADER.containers.0.args=--coordinator-token-file=/etc/shardstream/loader-token/token" \
	--expect "$LOADER.containers.0.args=--token-key-file=/etc/shardstream/token-key/token.key" \
	--expect "$LOADER.containers.0.readinessProbe.tcpSocket.port=7070" \
	--expect "$LOADER.volumes.6.secret.secretName=shardstream-loader-token"

case_ "loaders as a StatefulSet, with TLS" "${SECURE[@]}" --set loader.kind=StatefulSet -- \
	--expect "StatefulSet/$N-loader:spec.serviceName=$N-loader" \
	--expect "StatefulSet/$N-loader:spec.template.spec.containers.0.args=--advertise=\$(POD_NAME).$N-loader.$NS.svc:7070" \
	--expect "StatefulSet/$N-loader:spec.template.spec.containers.0.env.0.valueFrom.fieldRef.fieldPath=metadata.name" \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.scaleTargetRef.kind=StatefulSet" \
	--expect "Service/$N-loader:spec.publishNotReadyAddresses=True" \
	--absent Deployment/$N-loader

case_ "network policy" --set networkPolicy.enabled=true -- \
	--expect "NetworkPolicy/$N-coordinator:spec.ingress.0.from.1.podSelector.matchLabels.app=$N-loader" \
	--expect "NetworkPolicy/$N-loader:spec.ingress.1.ports.0.port=9090"

case_ "service monitor + dashboard" --set serviceMonitor.enabled=true,dashboard.enabled=true -- \
	--expect "ServiceMonitor/$N:spec.endpoints.0.port=metrics" \
	--expect "ServiceMonitor/$N:spec.endpoints.0.honorLabels=True" \
	--expect "ConfigMap/$N-dashboard:metadata.labels.grafana_dashboard=1"

case_ "autoscaling on cpu" --set loader.autoscaling.metric=cpu -- \
	--expect "HorizontalPodAutoscaler/$N-loader:spec.metrics.0.resource.target.averageUtilization=70"

case_ "autoscaling off, no loader PDB" --set loader.autoscaling.enabled=false,loader.replicas=3 \
	--set loader.podDisruptionBudget.enabled=false -- \
	--expect "Deployment/$N-loader:spec.replicas=3" --absent HorizontalPodAutoscaler \
	--absent PodDisruptionBudget/$N-loader

case_ "everything on" "${SECURE[@]}" \
	--set networkPolicy.enabled=true,serviceMonitor.enabled=true,dashboard.enabled=true \
	--set coordinator.podDisruptionBudget.maxUnavailable=1 \
	--set-string loader.podDisruptionBudget.maxUnavailable=25% -- \
	--expect "PodDisruptionBudget/$N-coordinator:spec.maxUnavailable=1" \
	--expect "PodDisruptionBudget/$N-loader:spec.maxUnavailable=25%"

# The dashboard the ConfigMap ships is deploy/grafana/shardstream.json.
helm_ template "$REL" "$CHART" --set dashboard.enabled=true --show-only templates/dashboard.yaml |
	"$PY" -c 'import json, sys, yaml; d = yaml.safe_load(sys.stdin)["data"]["shardstream.json"]; assert json.loads(d) == json.load(open("deploy/grafana/shardstream.json")), "dashboard differs"'

refused "auth without tls" "auth.secretName needs tls.enabled" \
	--set auth.secretName=a,auth.loaderTokenSecret.secretName=t
refused "auth without a loader token" "needs auth.loaderTokenSecret.secretName" \
	--set tls.enabled=true,tls.secretName=s,auth.secretName=a
refused "tls without a secret" "tls.secretName is required" --set tls.enabled=true
refused "grace period shorter than the drain" "must be at least loader.preStopSeconds" \
	--set loader.drainTimeoutSeconds=115
refused "unknown loader kind" "want Deployment or StatefulSet" --set loader.kind=DaemonSet
refused "unknown autoscaling metric" "want desiredLoaders or cpu" \
	--set loader.autoscaling.metric=memory

echo "== the rendered commands run: the loader joins the pool and drains (scripts/chart_smoke.py)"
helm_ template "$REL" "$CHART" --namespace "$NS" >"$TMP/defaults.yaml"
"$PY" scripts/chart_smoke.py --binary "$BIN" "$TMP/defaults.yaml"
echo "== the same with TLS + mutual TLS + auth + token key, loaders as a StatefulSet"
helm_ template "$REL" "$CHART" --namespace "$NS" "${SECURE[@]}" --set loader.kind=StatefulSet \
	>"$TMP/secure.yaml"
"$PY" scripts/chart_smoke.py --binary "$BIN" "$TMP/secure.yaml"

echo "== the validator refuses broken manifests"
"${VALIDATE[@]}" --binary "$BIN" --expect-invalid deploy/chart/tests/invalid/*.yaml
echo "chart-test: all passed"
