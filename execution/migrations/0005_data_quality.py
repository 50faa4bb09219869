# Data-quality records of the market data collectors [EX-5]: only the DataQuality model.
# Depends on 0004_live so the graph stays linear (no second leaf) until the lead merges it.

from django.db import migrations, models

import execution.models_quality


class Migration(migrations.Migration):

    dependencies = [
        ('execution', '0004_live'),
    ]

    operations = [
        migrations.CreateModel(
            name='DataQuality',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('exchange', models.CharField(help_text='market-data source: sim, replay, upbit or ccxt:<id>', max_length=32)),
                ('symbol', models.CharField(max_length=32)),
                ('counts', models.JSONField(default=execution.models_quality._empty_counts, help_text='{kind: {"rejected": n, "repaired": n, "flagged": n}}')),
                ('rows_checked', models.BigIntegerField(default=0, help_text='candles, books and tickers validated')),
                ('rows_rejected', models.BigIntegerField(default=0)),
                ('rows_repaired', models.BigIntegerField(default=0)),
                ('rows_flagged', models.BigIntegerField(default=0, help_text='kept but counted: missing bars, large real moves')),
                ('last_good_ts', models.BigIntegerField(blank=True, help_text='bar-open epoch seconds of the newest 1m candle that passed', null=True)),
                ('last_snapshot_ts', models.BigIntegerField(blank=True, help_text='epoch seconds of the newest book / ticker that passed', null=True)),
                ('last_problem', models.CharField(blank=True, max_length=300)),
                ('last_problem_at', models.DateTimeField(blank=True, null=True)),
                ('fetched_to', models.BigIntegerField(blank=True, help_text='collector bookkeeping: bar-open time up to which the venue has been read (a market without trades has no candle to show it)', null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['exchange', 'symbol'],
                'constraints': [models.UniqueConstraint(fields=('exchange', 'symbol'), name='data_quality_unique_market')],
            },
        ),
    ]
