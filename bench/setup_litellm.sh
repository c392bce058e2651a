#!/usr/bin/env bash
# Install the LiteLLM proxy into its own venv (bench/.venv-litellm, git-ignored), as a peer for
# bench/relay.py. The config it runs with is bench/litellm_config.yaml; relay.py points it at the
# loopback upstream through the UPSTREAM_BASE environment variable.
#
# The version is pinned: reproducible numbers, and no surprise upgrades of a package that has had
# compromised releases on the registry. A plain `pip install "litellm[proxy]==1.106.10"` fails
# here: every recent litellm requires certifi>=2026.10.19, newer than any certifi the registry
# serves (2026.10.18). certifi is only a CA bundle, unused on loopback, so this script installs
# litellm without dependencies, then its own and its `proxy` extra's requirements minus certifi.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
VENV=.venv-litellm
LITELLM_VERSION="${LITELLM_VERSION:-1.106.10}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pipq() { "$VENV/bin/pip" --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
  pipq install --quiet certifi
  pipq install --quiet --no-deps "litellm==${LITELLM_VERSION}"
fi
"$VENV/bin/python" - > "$VENV/litellm-reqs.txt" <<'PYEOF'
import importlib.metadata as m
from pip._vendor.packaging.requirements import Requirement
out = []
for line in m.requires("litellm") or []:
    r = Requirement(line)
    if r.name.lower() == "certifi":
        continue
    if r.marker is None or r.marker.evaluate({"extra": "proxy"}) and not r.marker.evaluate({"extra": ""}) or r.marker.evaluate({"extra": ""}):
        r.marker = None
        out.append(str(r))
print("\n".join(out))
PYEOF
pipq install --quiet -r "$VENV/litellm-reqs.txt"
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c "import litellm.proxy.proxy_server, importlib.metadata as m; print('litellm', m.version('litellm'))"
test -x "$VENV/bin/litellm"
echo "ok: $VENV/bin/litellm"
