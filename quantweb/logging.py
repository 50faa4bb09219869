"""Log filter that keeps secrets out of every log line (ground rule 6).

Two layers: values registered at run time (decrypted API keys are registered the moment they
are decrypted) are replaced wherever they appear, and common secret shapes (``secret=...``,
``Authorization: Bearer ...``) are masked even when nobody registered them.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

_PATTERNS = [
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?bearer\s+)[A-Za-z0-9._\-]+"),
    re.compile(r"(?i)((?:api[_-]?)?(?:secret|access)[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+"),
    re.compile(r"(?i)((?:api[_-]?)?secret['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+"),
    re.compile(r"(?i)(bot)\d{5,}:[A-Za-z0-9_\-]{20,}"),  # Telegram bot token inside a URL
]
MASK = "********"


def register_secret(value: str) -> None:
    """Remember a secret value so the filter masks it wherever it shows up."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            return True
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            exc_text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact(exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
