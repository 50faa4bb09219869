"""The learning layer's pure parts [AI-1]..[AI-6]: labels, the evaluation gate, the bandit, model
parameters, tuning and drift. No Django, no I/O, no clock: the Django services in
``strategies.learning`` load the rows, call these functions and store the results."""
