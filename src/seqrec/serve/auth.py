"""API keys for the endpoints that change state (events, forgetting a user, reloading).

Keys come from ``SEQREC_API_KEY`` (comma-separated, so a key can be rotated) and/or a key file
(one key per line, ``#`` comments); the CLI reads both and hands the keys to the app. Reads are
open. With no key configured, writes are refused unless the service was started ``--insecure``.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from seqrec.errors import ConfigError

API_KEY_ENV = "SEQREC_API_KEY"
API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16


def load_api_keys(env_value: str | None = None, key_file: str | Path | None = None) -> tuple[str, ...]:
    """Keys from an environment value and/or a file; short keys are refused (brute force)."""
    keys: list[str] = []
    if env_value:
        keys += [k.strip() for k in env_value.split(",") if k.strip()]
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the API key file {path}: {e.strerror}") from None
        keys += [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ConfigError(f"the API key file {path} holds no key")
    short = [k for k in keys if len(k) < MIN_KEY_LENGTH]
    if short:
        raise ConfigError(f"API keys must be at least {MIN_KEY_LENGTH} characters "
                          f"({len(short)} key(s) shorter); e.g. python -c "
                          "'import secrets; print(secrets.token_urlsafe(32))'")
    return tuple(dict.fromkeys(keys))


class KeyCheck:
    """Decides whether a request may write: ``None`` if yes, else ``(status, message)``."""

    def __init__(self, keys: tuple[str, ...], insecure: bool) -> None:
        self._keys = [k.encode() for k in keys]
        self.insecure = insecure and not keys

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def refuse(self, presented: str | None) -> tuple[int, str] | None:
        if self.insecure:
            return None
        if not self._keys:
            return 403, (f"writes are disabled: no API key is configured (set {API_KEY_ENV} or "
                         "--api-key-file, or start the service with --insecure)")
        if not presented:
            return 401, f"missing {API_KEY_HEADER} header"
        given = presented.encode()
        ok = False
        for k in self._keys:  # compare with every key, in constant time each
            ok |= hmac.compare_digest(given, k)
        return None if ok else (401, "invalid API key")
