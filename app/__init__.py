"""Responder's HTTP service and wiring. Importing ``app`` imports nothing heavy."""
