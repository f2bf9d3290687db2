"""The pure core: every decision, no I/O.

Certificates (``pem``, ``bundle``, ``client``, ``fingerprints``, ``chain``, ``pkcs12``),
the spec model (``spec``), addresses, conditions, the node file layout, the network's
types (``network``), the one reconcile and the one status assembler. Functions take bytes
and ``now`` and return values; import-linter keeps this package away from every I/O layer,
the Kubernetes clients and kopf.
"""
