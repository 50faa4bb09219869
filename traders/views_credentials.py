"""CONFIG's "TEST" button of a credential: records a TEST_CREDENTIAL intent for the worker.

The web never calls the venue [RT-1]: the worker's read-only balance fetch
(``traders.credential_check``) answers with an event on the action log and the intent's result.
"""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from traders import audit, permissions, services
from traders.models import Intent, IntentKind
from traders.views import refused


@require_POST
def credential_test(request, pk: int):
    if not permissions.can_manage_live(request.user):
        return refused(request, "Only staff may test credentials.")
    credential = get_object_or_404(permissions.credentials_for(request.user), pk=pk)
    with transaction.atomic():
        intent = Intent.objects.create(kind=IntentKind.TEST_CREDENTIAL, payload={"credential_id": credential.pk},
                                       created_by=request.user)
        audit.record(f"INTENT_{intent.kind}", actor=request.user, obj=intent,
                     payload={"credential_id": credential.pk, "label": credential.label})
        transaction.on_commit(services._nudge_worker)   # picked up now, not at the next dispatch
    messages.info(request, f"Testing {credential.label}: a worker fetches the balances (read-only); "
                           "the result appears in the events within a few seconds.")
    return redirect("config")
