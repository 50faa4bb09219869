"""Intents that keep failing end FAILED with their reason; retries are counted and backed off
(issue 21, item 2)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('traders', '0005_runbook'),
    ]

    operations = [
        migrations.AddField(
            model_name='intent',
            name='attempts',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='intent',
            name='next_attempt_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='intent',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('done', 'Done'), ('rejected', 'Rejected'),
                                            ('failed', 'Failed')], default='pending', max_length=10),
        ),
    ]
