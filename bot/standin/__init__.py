"""A local stand-in for Slack: a Web API server that records calls, and a signed client.

It serves the tests and ``tokenbot demo``; nothing in it is used when talking to Slack.
"""

from bot.standin.client import SlackClient
from bot.standin.server import Call, SlackStandin

__all__ = ["Call", "SlackClient", "SlackStandin"]
