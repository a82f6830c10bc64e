"""Files of the repository the test bed works with: the Helm chart, the CRDs and the
examples. The test bed runs from a checkout (installed editable), two levels below its root."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "i2p-multihome"
CRDS_DIR = REPO / "crds"
CRD_FILE = CRDS_DIR / "multihomeddestinations.multihome.i2p.yaml"
PEERING_CRD_FILE = CRDS_DIR / "kopf-peering.yaml"
EXAMPLES_DIR = REPO / "examples"
