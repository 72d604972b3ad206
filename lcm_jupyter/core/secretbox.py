"""Encryption of provider API keys at rest (Fernet), under one secret.

The secret comes from configuration, or is generated once into a file that
only its owner can read (0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

_CHECK_MESSAGE = b"lcm-jupyter: the secret that encrypts provider keys, v1"


class SecretMismatch(RuntimeError):
    """This process's secret is not the one a database's provider keys were encrypted with."""


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        from cryptography.fernet import Fernet  # imported here: keeps `import lcm_jupyter` cheap

        raw = key.encode() if isinstance(key, str) else key
        self._fernet = Fernet(raw)
        self._raw = raw
        # Stored with the data so that a server with another secret is told at start: an
        # HMAC under the secret tells nothing of the secret itself.
        self.check_value = hmac.new(raw, _CHECK_MESSAGE, hashlib.sha256).hexdigest()[:32]

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The box under the key in `path`, creating that file (0600) the first time."""
        return cls(load_or_create_key(path))

    def derive(self, label: str) -> bytes:
        """32 bytes only this secret gives for `label` (an HMAC): what a server re-makes,
        the same every time and on every server sharing the secret, without storing it."""
        message = b"lcm-jupyter derive: " + label.encode()
        return hmac.new(self._raw, message, hashlib.sha256).digest()

    def encrypt(self, plain: str) -> str:
        """`plain` encrypted, as text."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plain text of a token made by `encrypt`."""
        return self._fernet.decrypt(token.encode()).decode()


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key stored in `path`; made and written with mode 0600 if absent."""
    from cryptography.fernet import Fernet

    path = Path(path)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        # O_EXCL: two servers starting at once must not write two different keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
