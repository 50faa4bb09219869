"""Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEY.

Rotation: prepend the new key (``FIELD_ENCRYPTION_KEY=new,old``), restart, run this command,
then drop the old key. Every ``EncryptedTextField`` of every model is covered (exchange
credentials, the Telegram bot token). A value no configured key decrypts is reported and left
untouched, and the command exits non-zero.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from traders.fields import EncryptedTextField


def encrypted_fields() -> list[tuple[type, list[str]]]:
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found


def rotate(*, dry_run: bool = False) -> tuple[int, list[str]]:
    """Returns (values re-encrypted, problems). Each row is read (decrypted with any key) and
    written back (encrypted with the first key) under its row lock."""
    rotated, problems = 0, []
    for model, names in encrypted_fields():
        label = model._meta.label
        for pk in model._base_manager.order_by("pk").values_list("pk", flat=True):
            try:
                with transaction.atomic():
                    row = model._base_manager.select_for_update().only("pk", *names).get(pk=pk)
                    values = {name: getattr(row, name) for name in names if getattr(row, name)}
                    if values and not dry_run:
                        # update(): no save() side effects; get_prep_value encrypts with the first key.
                        model._base_manager.filter(pk=pk).update(**values)
                    rotated += len(values)
            except ValueError as exc:       # no configured key decrypts it
                problems.append(f"{label} #{pk}: {exc}")
    return rotated, problems


class Command(BaseCommand):
    help = "Re-encrypt every credential secret and the Telegram token with the first FIELD_ENCRYPTION_KEY."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="decrypt everything, write nothing")

    def handle(self, *args, **options):
        rotated, problems = rotate(dry_run=options["dry_run"])
        verb = "would re-encrypt" if options["dry_run"] else "re-encrypted"
        self.stdout.write(f"{verb} {rotated} secret value(s) with the first FIELD_ENCRYPTION_KEY")
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"{len(problems)} row(s) could not be decrypted with any configured key; "
                               "re-enter those secrets (CONFIG or admin)")
