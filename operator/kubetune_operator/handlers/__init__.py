"""Kopf handlers: parse, delegate to services, report. No business logic here."""
