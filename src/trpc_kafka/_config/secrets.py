"""The one secret vocabulary: which keys hold secrets, and the one mask shown instead.

Used by every path that can print configuration: the address parser's errors and
``redact_address``, ``KafkaConfig``'s repr, the librdkafka settings shown in logs
(``redact_settings``), the YAML file's reprs and errors, and the server's logs.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

MASK: Final = "******"
"""What a secret value is replaced with, everywhere."""

# A key (address key, YAML key, librdkafka property, any case) whose value is a secret:
# password, sasl.password, tlsKeyPassword, ssl.keystore.password, ssl.key.pem (key content),
# sasl.oauthbearer.config (may hold a client secret), *secret*, *token*, *credential*, passphrase.
_SECRET_KEY: Final = re.compile(
    r"pass(?:word|wd|phrase)|pwd|secret|token|credential|key\.pem|private\.key|privatekey"
    r"|oauthbearer\.config|jaas",
    re.IGNORECASE,
)
# ``name=value`` inside a string (an address's query, a log line); the value runs to the next
# ``&`` (or the end), so a secret with spaces is masked whole.
_PARAM: Final = re.compile(r"(?:(?<=[?&;,\s])|^)([^=&?;,\s]+)=([^&]*)")
# ``scheme://user:password@host``.
_URL_USERINFO: Final = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def is_secret_key(key: str) -> bool:
    """Whether the value of ``key`` must never be shown (any spelling, any prefix)."""
    return _SECRET_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """``text`` with the values of secret ``key=value`` pairs and URL passwords masked.

    Keys are percent-decoded before they are judged (``rdkafka.ssl.key%2Epem=`` is a secret).
    """

    def hide(m: re.Match[str]) -> str:
        if is_secret_key(unquote(m.group(1))):
            return f"{m.group(1)}={MASK}"
        return m.group(0)

    if "=" in text:
        text = _PARAM.sub(hide, text)
    if "@" in text:
        text = _URL_USERINFO.sub(rf"\g<1>{MASK}@", text)
    return text
