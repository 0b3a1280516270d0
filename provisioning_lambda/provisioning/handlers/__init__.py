"""The Lambda entry points: each parses its event, builds the request's context (context.py)
and calls one use case. Nothing else lives here."""
