"""Backups and recovery (PLT-4): encrypted, signed `pg_dump` archives, restore into a fresh
database, and the restore drill that measures RPO and RTO."""
