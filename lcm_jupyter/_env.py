"""What the server and the kernels agree on: environment variable names and the auth scheme.

Both sides import this module and nothing else of each other (the server does not import
the kernel-side client, nor the client the server), so it stays free of imports.

- `LCM_SERVER_URL`: where the extension (or `%lcm serve`) listens, with its base_url.
- `LCM_KERNEL_TOKEN`: the kernels' own credential for that server's `lcm/api` (and nothing
  else), sent as `Authorization: lcm-kernel <token>` (server/kernel_auth.py).
- `LCM_SERVER_TOKEN`: a Jupyter token the user chose to give; the extension never sets it.
- `JUPYTERHUB_API_TOKEN`: set by JupyterHub in single-user servers and their kernels.
- `LCM_KERNEL_KEY`: a metered kernel's own proxy key (server/kernels.py), with which
  `lcm_jupyter.kernel_ext` names its cells at `KERNEL_CELL_PATH`.
"""

from __future__ import annotations

URL_ENV = "LCM_SERVER_URL"
KERNEL_TOKEN_ENV = "LCM_KERNEL_TOKEN"
TOKEN_ENV = "LCM_SERVER_TOKEN"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
KERNEL_AUTH_SCHEME = "lcm-kernel"
KERNEL_KEY_ENV = "LCM_KERNEL_KEY"
KERNEL_CELL_PATH = "lcm/kernel/cell"
