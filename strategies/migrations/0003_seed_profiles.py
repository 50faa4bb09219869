"""The five strategy profiles of SPEC section 7 exist after ``migrate`` [DM-1].

Values are frozen here (a migration must not change meaning when code changes later). Fractions,
not percents: 0.0025 = 0.25 %. Every key not listed takes risk.engine.profiles' default when
the profile is loaded. AI MODE starts as STANDARD and takes the live model version's parameters
once one exists.
"""

from django.db import migrations

PROFILES = [
    ("SAFETY_FIRST", "SAFETY FIRST", "Smallest risk, strictest entries.",
     {"risk_per_trade": 0.0025, "max_portfolio_risk": 0.02, "risk_multiplier": 0.8, "entry_threshold": 80,
      "daily_loss_limit": 0.02, "consecutive_loss_limit": 3, "max_positions_cap": 3}),
    ("STANDARD", "STANDARD", "The default balance of risk and opportunity.",
     {"risk_per_trade": 0.005, "max_portfolio_risk": 0.05, "risk_multiplier": 1.0, "entry_threshold": 70,
      "daily_loss_limit": 0.05, "consecutive_loss_limit": 5, "max_positions_cap": 5}),
    ("PROFIT_FIRST", "PROFIT FIRST", "More risk per trade, looser entries.",
     {"risk_per_trade": 0.01, "max_portfolio_risk": 0.08, "risk_multiplier": 1.15, "entry_threshold": 65,
      "daily_loss_limit": 0.07, "consecutive_loss_limit": 6, "max_positions_cap": 7}),
    ("CRAZY", "CRAZY", "Maximum risk the platform allows.",
     {"risk_per_trade": 0.02, "max_portfolio_risk": 0.15, "risk_multiplier": 1.3, "entry_threshold": 60,
      "daily_loss_limit": 0.10, "consecutive_loss_limit": 8, "max_positions_cap": 10}),
    ("AI_MODE", "AI MODE", "Parameters of the live model version; STANDARD until one exists.",
     {"risk_per_trade": 0.005, "max_portfolio_risk": 0.05, "risk_multiplier": 1.0, "entry_threshold": 70,
      "daily_loss_limit": 0.05, "consecutive_loss_limit": 5, "max_positions_cap": 5}),
]
COMMON = {"exit_threshold": 40}


def seed(apps, schema_editor):
    StrategyProfile = apps.get_model("strategies", "StrategyProfile")
    ConfigVersion = apps.get_model("strategies", "ConfigVersion")
    for key, name, description, params in PROFILES:
        if StrategyProfile.objects.filter(key=key).exists():
            continue  # never overwrite an operator's edits
        params = {**COMMON, **params}
        profile = StrategyProfile.objects.create(key=key, name=name, description=description, params=params)
        version = ConfigVersion.objects.create(profile=profile, version=1, params=params, comment="initial defaults")
        profile.current_version = version
        profile.save(update_fields=["current_version"])


class Migration(migrations.Migration):
    dependencies = [("strategies", "0002_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
