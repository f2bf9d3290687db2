"""The network edge: the registry's /ca, its TLS chain and /basic_info (I/O).

``transport`` (sockets with a total deadline, TLS contexts, one GET), ``fetch`` (``/ca``,
pinned), ``verify`` (the chain and name as Go checks them, ``/basic_info``), ``live``
(the :class:`~dtrtrust.core.network.Network` the front ends pass to the reconcile).
Standard library ``http.client`` + ``ssl``: full control over timeouts, body caps,
redirects and verification, and no extra dependency.
"""
