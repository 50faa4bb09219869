from django.core.management.base import BaseCommand, CommandError

from traders.audit import verify_chain
from traders.models import AuditLog


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exit non-zero and name the first bad row if it was altered."

    def handle(self, *args, **options):
        problem = verify_chain()
        if problem is not None:
            raise CommandError(f"audit chain broken at row #{problem.seq}: {problem.reason}")
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {AuditLog.objects.count()} rows"))
