"""Block Kit builders: pure functions from data to the dicts Slack takes."""
