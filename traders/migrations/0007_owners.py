"""Owners for traders and credentials; paper protection counts accumulated PAPER running time
(issue 21, item 4).

Data: existing traders and credentials go to the first superuser, if any (else they stay
ownerless, which only staff see). Paper time: nobody knows how long existing traders ran in
PAPER, so PAPER traders start from 0 (a running one from now). LIVE traders that had passed the
old wall-time rule keep that credit, so the migration does not halt LIVE order flow (exits and
stops included) of a trader that was already allowed to trade.
"""

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def assign_owners_and_paper_time(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Trader = apps.get_model("traders", "Trader")
    Credential = apps.get_model("traders", "Credential")
    first = User.objects.filter(is_superuser=True).order_by("pk").first()
    if first is not None:
        Trader.objects.filter(owner__isnull=True).update(owner=first)
        Credential.objects.filter(owner__isnull=True).update(owner=first)
    now = timezone.now()
    for trader in Trader.objects.exclude(paper_protection_started_at=None).only(
            "pk", "mode", "status", "removed_at", "paper_protection_started_at"):
        if trader.mode == "LIVE":
            credit = max(0, int((now - trader.paper_protection_started_at).total_seconds()))
            Trader.objects.filter(pk=trader.pk).update(paper_seconds=credit)
    Trader.objects.filter(mode="PAPER", status__in=["running", "paused"], removed_at=None).update(
        paper_run_started_at=now)


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('traders', '0006_intent_failed'),
    ]

    operations = [
        migrations.AddField(
            model_name='credential',
            name='owner',
            field=models.ForeignKey(blank=True, null=True, on_delete=models.deletion.SET_NULL,
                                    related_name='credentials', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='trader',
            name='owner',
            field=models.ForeignKey(blank=True, null=True, on_delete=models.deletion.SET_NULL,
                                    related_name='traders', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='trader',
            name='paper_seconds',
            field=models.PositiveBigIntegerField(default=0, help_text='seconds run in PAPER (finished runs)'),
        ),
        migrations.AddField(
            model_name='trader',
            name='paper_run_started_at',
            field=models.DateTimeField(blank=True, help_text='start of the current PAPER run', null=True),
        ),
        migrations.AlterField(
            model_name='trader',
            name='paper_protection_started_at',
            field=models.DateTimeField(blank=True, help_text='first PAPER start', null=True),
        ),
        migrations.RunPython(assign_owners_and_paper_time, migrations.RunPython.noop),
    ]
