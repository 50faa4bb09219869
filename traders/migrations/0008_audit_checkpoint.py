# Signed audit checkpoints [issue 21 #7] and the TEST_CREDENTIAL intent kind [issue 21 #5].
# Chained after the two sibling 0006 migrations of the same issue (0006_intent_failed ->
# 0006_owners) so that there is one leaf; it needs only 0005_runbook (the lead may renumber).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("traders", "0007_owners"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(db_index=True)),
                ("seq", models.BigIntegerField(help_text="the audit row the checkpoint pins (0: empty log)")),
                ("hash", models.CharField(help_text="that row's hash", max_length=64)),
                ("reason", models.CharField(choices=[("schedule", "Scheduled"), ("export", "Audit export"),
                                                     ("manual", "Manual (verify_audit --checkpoint)")],
                                            max_length=10)),
                ("key_id", models.CharField(help_text="fingerprint of the signing key (not the key)", max_length=16)),
                ("signature", models.CharField(help_text="HMAC-SHA256 over seq, hash, time and reason",
                                               max_length=64)),
            ],
            options={"ordering": ["seq", "id"]},
        ),
        migrations.AlterField(
            model_name="intent",
            name="kind",
            field=models.CharField(choices=[
                ("START", "Start"), ("STOP", "Stop"), ("REMOVE", "Remove"), ("SET_MODE", "Set run mode"),
                ("ARM", "Arm LIVE"), ("DISARM", "Disarm"), ("LIQUIDATE", "Liquidate positions"),
                ("KILL_ALL", "Master kill switch"), ("RELEASE_KILL", "Release master kill switch"),
                ("EMERGENCY_STOP", "Emergency stop and liquidate all"),
                ("TEST_CREDENTIAL", "Test a credential's connection"),
            ], max_length=20),
        ),
    ]
