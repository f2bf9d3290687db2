"""Everything dtrtrust reads and writes on a node, under a host root (I/O).

* :mod:`dtrtrust.node.writer` -- ``sync_trust`` / ``remove_trust`` / ``owned_trusts``:
  the certs.d address directories, owned, reversible, atomic per file.
* :mod:`dtrtrust.node.fs` -- the no-follow, dir-fd-relative primitives and the public
  helpers (``write_file``, ``read_file``, ``remove_file``, ``ensure_dir``) every other
  module uses for a file it writes under a host root.
* :mod:`dtrtrust.node.record`, :mod:`dtrtrust.node.lock`,
  :mod:`dtrtrust.node.migrate` -- the ownership record, the per-host-root lock, the
  migration from older versions' ``.dtrtrust``.
* :mod:`dtrtrust.node.containerd` -- does containerd's config make it read certs.d?
* :mod:`dtrtrust.node.systemtrust` -- the OS trust store (``apply --system-trust``).

No Kubernetes client, no kopf, no cryptography (import-linter keeps it so).
"""
