from django.core.management.base import BaseCommand, CommandError

from traders.audit import AuditChainBroken, checkpoint, verify_chain
from traders.models import AuditCheckpoint, AuditLog


class Command(BaseCommand):
    help = ("Verify the audit log's hash chain against its signed checkpoints (AUDIT_HMAC_KEY); exit "
            "non-zero and name the first bad row if rows were altered, recomputed, deleted or wiped.")

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", action="store_true",
                            help="after a successful check, sign a checkpoint of the current tip")

    def handle(self, *args, **options):
        problem = verify_chain()
        if problem is not None:
            raise CommandError(f"audit chain broken at row #{problem.seq}: {problem.reason}")
        checkpoints = AuditCheckpoint.objects.count()
        self.stdout.write(self.style.SUCCESS(
            f"audit chain intact: {AuditLog.objects.count()} rows, {checkpoints} signed checkpoint(s)"))
        if options["checkpoint"]:
            try:
                row = checkpoint(AuditCheckpoint.Reason.MANUAL)
            except AuditChainBroken as exc:      # a row was appended broken in between
                raise CommandError(str(exc)) from None
            self.stdout.write(f"signed checkpoint of row #{row.seq}")
