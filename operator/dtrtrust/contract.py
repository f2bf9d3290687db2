"""Every name that crosses a process boundary: the wire contract, in one place.

The operator writes these names (Secret labels, annotations and keys, status, reports),
the agent and ``dtrtrust apply`` read them, and users' manifests, dashboards and checks
rely on them. Names marked **fixed** are fixed by ``DESIGN.md``: never change them.

No imports, so every side (the agent included, which must stay light) can use it.
"""

# --- the API (fixed) -----------------------------------------------------------------------
API_GROUP = "dtrtrust.io"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "DTRTrust"
PLURAL = "dtrtrusts"
# The agents' per-node report (namespaced, one per node, ``kubectl get dtrtn``).
NODE_REPORT_KIND = "DTRTrustNode"
NODE_REPORT_PLURAL = "dtrtrustnodes"

# Where the operator, the bundle Secrets, the source refs, the reports and the agent live.
DEFAULT_NAMESPACE = "dtrtrust-system"
# The API server accepts events about a cluster-scoped object only in "default".
EVENTS_NAMESPACE = "default"

# --- condition types (fixed) -----------------------------------------------------------------
CA_AVAILABLE = "CAAvailable"
BUNDLE_VALID = "BundleValid"
CLIENT_CERTIFICATE_VALID = "ClientCertificateValid"
REGISTRY_VERIFIED = "RegistryVerified"
NODES_SYNCED = "NodesSynced"
NODES_VERIFIED = "NodesVerified"
READY = "Ready"

# --- the bundle Secret ----------------------------------------------------------------------
SECRET_PREFIX = "dtrtrust-"  # noqa: S105 - fixed name prefix ("dtrtrust-<trust>"), not a password
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "dtrtrust"
MANAGED_BY_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
TRUST_LABEL = f"{API_GROUP}/trust"  # fixed
HASH_ANNOTATION = f"{API_GROUP}/content-hash"
ADDRESSES_ANNOTATION = f"{API_GROUP}/registries"
TARGETS_ANNOTATION = f"{API_GROUP}/targets"
SELECTOR_ANNOTATION = f"{API_GROUP}/node-selector"
POLICY_ANNOTATION = f"{API_GROUP}/deletion-policy"
# The per-node probe: "off" (spec.verify.nodes false) or the seconds between probes of
# unchanged files (the trust's refreshInterval).
NODE_PROBE_ANNOTATION = f"{API_GROUP}/node-probe"
NODE_PROBE_OFF = "off"
# Secret keys (fixed) are also the node file names.
CA_KEY = "ca.crt"
CLIENT_CERT_KEY = "client.cert"
CLIENT_KEY_KEY = "client.key"
# Keys of the user's kubernetes.io/tls client Secret.
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
# spec.ca.secretRefs / configMapRefs default key.
DEFAULT_SOURCE_KEY = "ca.crt"

# --- node files (fixed layout) ----------------------------------------------------------------
CA_FILE = CA_KEY
CLIENT_CERT_FILE = CLIENT_CERT_KEY
CLIENT_KEY_FILE = CLIENT_KEY_KEY
HOSTS_TOML_FILE = "hosts.toml"
TARGETS = ("docker", "containers", "containerd", "notary")
DEFAULT_TARGETS = ("docker",)
DELETION_POLICIES = ("Delete", "Retain")
# Every trust selects only Linux nodes, on top of its nodeSelector.
DEFAULT_NODE_SELECTOR = {"kubernetes.io/os": "linux"}

# --- the per-node report's per-trust states -----------------------------------------------------
SYNCED = "Synced"
CONFLICT = "Conflict"
NOT_EFFECTIVE = "NotEffective"
ERROR = "Error"
REMOVED = "Removed"
RETAINED = "Retained"
REPORT_STATES = (SYNCED, CONFLICT, NOT_EFFECTIVE, ERROR, REMOVED, RETAINED)

# --- the agent DaemonSet ------------------------------------------------------------------------
AGENT_DAEMONSET = "dtrtrust-agent"
SPEC_HASH_ANNOTATION = f"{API_GROUP}/spec-hash"
# Startup taint (fixed key, opt-in): removed by a node's agent once its trusts are in place.
NOT_READY_TAINT = f"{API_GROUP}/not-ready"


def secret_name(trust: str) -> str:
    """The bundle Secret of a trust (fixed: ``dtrtrust-<cr name>``)."""
    return f"{SECRET_PREFIX}{trust}"
