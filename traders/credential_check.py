"""The "test connection" check of a credential [SPEC 13, RT-1].

The web records a ``TEST_CREDENTIAL`` intent (``payload = {"credential_id": N}``); the worker's
intent processing calls ``run_check`` in its venue phase, outside any database transaction. The
check is one read-only venue call, the balance fetch: it proves the key pair is accepted without
placing, cancelling or moving anything. The outcome is an event on the action log (shown on the
dashboard and CONFIG), an audit row and the intent's result; never the key or the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from traders.models import Credential, EventLevel, Intent

logger = logging.getLogger(__name__)

OK_KIND = "CREDENTIAL_TEST_OK"
FAILED_KIND = "CREDENTIAL_TEST_FAILED"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


def client_for(credential: Credential):
    """A fresh venue client for ``credential`` with few retries (an operator is waiting)."""
    key, secret = str(credential.api_key), str(credential.api_secret)
    if credential.exchange == "upbit":
        from execution.adapters.upbit import UpbitExchange

        return UpbitExchange(key, secret, base_url=settings.QUANTWEB_UPBIT_BASE_URL, max_retries=1, max_wait=2.0)
    if credential.exchange == "ccxt":
        from execution.adapters.ccxt_adapter import CcxtExchange

        if not credential.ccxt_id:
            raise ValueError("the ccxt credential names no exchange id")
        return CcxtExchange(credential.ccxt_id, key, secret, sandbox=credential.sandbox)
    raise ValueError(f"{credential.get_exchange_display()} takes no credential")


def check(credential: Credential, client_factory: Callable[[Credential], object] | None = None) -> CheckResult:
    """Fetch the balances once; never raises. The message names the failure, not the secret."""
    from execution.adapters.base import AuthenticationError, ExchangeError
    from quantweb.logging import redact

    try:
        client = (client_factory or client_for)(credential)
        balances = client.balances()
    except AuthenticationError as exc:
        return CheckResult(False, redact(f"the venue refused the key: {exc}"))
    except ExchangeError as exc:
        return CheckResult(False, redact(f"venue error: {type(exc).__name__}: {exc}"))
    except ValueError as exc:       # a key that cannot be decrypted, an unusable credential
        return CheckResult(False, redact(str(exc)))
    except Exception as exc:        # an operator's test must always get an answer
        logger.warning("credential %s: connection test crashed", credential.pk, exc_info=True)
        return CheckResult(False, redact(f"{type(exc).__name__}: {exc}"))
    held = sum(1 for amount in balances.values() if amount)
    return CheckResult(True, f"connection OK, balances read ({held} asset(s) held)")


def run_check(intent: Intent, client_factory: Callable[[Credential], object] | None = None) -> list[str]:
    """The venue phase of a TEST_CREDENTIAL intent: check, then report in one short transaction.
    A failed check is a result, not an intent failure: returns no failures (nothing to retry)."""
    from traders import audit
    from traders.services import log_event

    credential_id = intent.payload.get("credential_id")
    # The label without decrypting: a credential no key decrypts still gets an answer.
    label = Credential.objects.filter(pk=credential_id).values_list("label", flat=True).first()
    credential = None
    if label is None:
        result, label = CheckResult(False, "the credential no longer exists"), f"#{credential_id}"
    else:
        try:
            credential = Credential.objects.get(pk=credential_id)
        except Credential.DoesNotExist:    # deleted a moment ago
            result = CheckResult(False, "the credential no longer exists")
        except ValueError as exc:          # loading decrypts
            result = CheckResult(False, str(exc))
        else:
            result = check(credential, client_factory)
    with transaction.atomic():
        log_event(None, OK_KIND if result.ok else FAILED_KIND, f"Credential {label}: {result.message}",
                  level=EventLevel.INFO if result.ok else EventLevel.WARN,
                  data={"credential": credential_id, "ok": result.ok})
        audit.record("CREDENTIAL_TESTED", actor="system", obj=credential,
                     payload={"credential": credential_id, "ok": result.ok,
                              "result": result.message})
    intent.result = f"{'OK' if result.ok else 'FAILED'}: {result.message}"[:300]
    return []
