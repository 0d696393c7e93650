"""Ramparts."""
