"""The host side: what dtrtrust writes and reads on a node's file system (I/O).

``writer`` applies the pure layout under a host root (atomic, owned, reversible, never
following a symlink); ``containerd`` reads the runtime's config to tell whether it will
use the files; ``systemtrust`` installs a bundle into the OS trust store (``apply
--system-trust``).
"""
