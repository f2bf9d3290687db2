"""Write argocd-cm.yaml from health.lua, so the Lua has one source.

    python3 deploy/argocd/generate.py          # rewrite argocd-cm.yaml
    python3 deploy/argocd/generate.py --check  # exit 1 when it is out of date

Standard library only. tests/deploy/test_argocd_health.py runs the same check.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LUA = HERE / "health.lua"
CONFIG_MAP = HERE / "argocd-cm.yaml"
KEY = "resource.customizations.health.dtrtrust.io_DTRTrust"

HEADER = """\
# Argo CD health check for DTRTrust: Healthy only when Ready is True for the current
# generation, Progressing while the nodes sync, Degraded on any failure.
#
# GENERATED from health.lua by generate.py: edit health.lua, then run
#   python3 deploy/argocd/generate.py
#
# Merge the data key into the argocd-cm ConfigMap of your Argo CD installation
# (namespace argocd by default), e.g. with
#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm.yaml
# or as a patch in the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def render(lua: str) -> str:
    """The ConfigMap with ``lua`` as a literal block scalar (kept byte for byte)."""
    if not lua.endswith("\n") or lua.endswith("\n\n"):
        raise ValueError("health.lua must end with exactly one newline")
    if any(line != line.rstrip() for line in lua.splitlines()):
        raise ValueError("health.lua has trailing whitespace, which YAML would not keep")
    if "\t" in lua:
        raise ValueError("health.lua has tabs; YAML block scalars need spaces")
    body = "".join(f"    {line}\n" if line else "\n" for line in lua.splitlines())
    return f"{HEADER}  {KEY}: |\n{body}"


def main(argv: list[str]) -> int:
    wanted = render(LUA.read_text(encoding="utf-8"))
    if "--check" in argv:
        current = CONFIG_MAP.read_text(encoding="utf-8") if CONFIG_MAP.exists() else ""
        if current != wanted:
            print(f"{CONFIG_MAP} is out of date: run python3 {Path(__file__)}", file=sys.stderr)
            return 1
        return 0
    CONFIG_MAP.write_text(wanted, encoding="utf-8")
    print(f"wrote {CONFIG_MAP}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
